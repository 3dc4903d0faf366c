"""``make bench``: what this machine does with the bundled detector, measured in one run.

Sections: raw ONNX Runtime throughput (:mod:`bench.inference`), the in-process pipeline stage by
stage (:mod:`bench.pipeline`), ``POST /detect`` over loopback against a real uvicorn server
(:mod:`bench.server`, :mod:`bench.http_load`), and the two per-class NMS implementations
(:mod:`bench.nms`). :mod:`bench.report` turns the figures into text and a markdown table.
"""
