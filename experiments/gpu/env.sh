# Sourced by the GPU scripts: Keras from the carried wheels where the machine has none, the JAX backend.
#
# The GPU machine has JAX but neither TensorFlow nor Keras, and reaches no registry: keras, namex and
# optree travel as wheels in .whl/ (`experiments/gpu/download_wheels.sh`, run where pip works) and
# install from there with --no-index into a private folder. $PYTHON picks the interpreter (default
# python3), so a dry run can use a JAX-only venv on any machine.

fer_gpu_env() {
    local root=$1 wheels=$1/.whl site=${TMPDIR:-/tmp}/fer-keras-site
    PYTHON=${PYTHON:-python3}
    # Before the probe: Keras' default backend is TensorFlow, which that machine lacks.
    export PYTHON KERAS_BACKEND=${KERAS_BACKEND:-jax} XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
    if ! "$PYTHON" -c 'import keras' 2>/dev/null; then
        if ! ls "$wheels"/keras-*.whl >/dev/null 2>&1; then
            echo "no keras here and no keras wheel in $wheels: run experiments/gpu/download_wheels.sh where pip works," \
                 "and carry .whl" >&2
            return 2
        fi
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
            "$wheels"/*.whl || return 2
        export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
    fi
    # The working tree's fer_model / fer_cli, not an installed copy.
    export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}
}
