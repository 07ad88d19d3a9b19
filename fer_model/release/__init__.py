"""Release: whether a candidate model replaces the serving one (`gate`), and rolling it out (`deploy`).

`crd_schema` derives the InferenceService schema the deploy step's manifests are checked against.
Importing this package is light; the kubernetes client loads inside the functions that talk to a cluster.
"""
