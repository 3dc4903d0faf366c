"""Real pretrained models converted into Sightline models: weights taken from registry packages
(PyPI, npm), converted to ONNX, proven against the runtime they came from, and written with their
metadata into ``models/`` (``make import-models``). One module per source."""
