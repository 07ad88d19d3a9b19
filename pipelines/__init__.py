"""Kubeflow pipelines wiring the components in `components/` into DAGs."""
