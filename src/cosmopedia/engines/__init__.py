"""Inference engines: the dummy TGI-protocol server and the sidecar that runs a server in a job."""
