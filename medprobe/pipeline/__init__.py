"""The probing pipeline: build the job, ensure the features, probe, write, track."""
