"""The HTTP floor: the least a FastAPI app on uvicorn spends on one ``POST /detect`` with no vision
at all. It parses the multipart upload as the real route does (FastAPI's ``UploadFile`` list),
reads the bytes and answers a small JSON. Section 9 drives it with the same clients as the real
servers: its CPU per request, and the clients', are costs any server of this stack pays on top of
decoding and running the model, which bounds the server against raw ONNX Runtime
(``bench.runtime.ceilings``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, File, UploadFile

app = FastAPI(title="HTTP floor (bench only)")


@app.get("/readyz")
async def readyz() -> dict:
    return {"status": "ready"}


@app.post("/detect")
async def detect(image: Annotated[list[UploadFile], File()]) -> dict:
    data = [await f.read() for f in image]
    return {"images": len(data), "bytes": sum(map(len, data))}
