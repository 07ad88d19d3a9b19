"""fer-mtl: multi-task facial emotion recognition (emotion, gender, race, age) from one CNN.

Light on import: TensorFlow/Keras load only when a model is built, trained or served.
"""

__version__ = "0.1.0"
