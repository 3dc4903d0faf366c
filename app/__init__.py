"""Sightline: a self-hosted computer-vision service over ONNX Runtime. Never imports torch."""
