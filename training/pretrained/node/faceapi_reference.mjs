// face-api 1.7.15 on TF.js 4.22 (wasm backend) in Node.js: the reference that
// training/pretrained/faceapi.py checks its PyTorch/ONNX port against.
//
// stdin: one JSON request, every tensor a raw little-endian float32 file in NHWC / HWC order:
//   {"model_dir": ".../package/model",
//    "ssd":       [{"input": "a.f32", "shape": [1, 512, 512, 3]}, ...],   // pixels 0..255
//    "landmarks": [{"input": "b.f32", "shape": [1, 112, 112, 3]}, ...],   // pixels 0..255
//    "batch_tensor": [{"input": "c.f32", "shape": [H, W, 3], "size": 512, "center": false,
//                      "output": "d.f32"}, ...]}                           // face-api's pad + resize
// stdout: one JSON answer (see main); logs go to stderr.
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const require = createRequire(import.meta.url); // resolves through NODE_PATH (set by node.py)
const tf = require('@tensorflow/tfjs');
const wasm = require('@tensorflow/tfjs-backend-wasm');
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');

function readTensor({ input, shape }) {
  const bytes = readFileSync(input);
  const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  return tf.tensor(data, shape, 'float32');
}

// Our own loader (no fetch, no tfjs-node): manifest + shards concatenated, decoded by tf.io.
function loadWeightMap(modelDir, name) {
  const manifest = JSON.parse(readFileSync(path.join(modelDir, `${name}-weights_manifest.json`), 'utf8'));
  const map = {};
  for (const group of manifest) {
    const shards = group.paths.map((p) => readFileSync(path.join(modelDir, p)));
    const joined = Buffer.concat(shards);
    const buffer = joined.buffer.slice(joined.byteOffset, joined.byteOffset + joined.byteLength);
    Object.assign(map, tf.io.decodeWeights(buffer, group.weights));
  }
  return map;
}

function timed(fn) {
  const t0 = performance.now();
  const out = fn();
  return [out, performance.now() - t0];
}

async function runSsd(net, item, warmUp) {
  const input = readTensor(item);
  const size = item.shape[1];
  if (warmUp) tf.dispose(Object.values(await net.forward(input)).flat()); // first call sets up kernels
  const t0 = performance.now();
  const { boxes, scores } = await net.forward(input);
  const raw = { boxes: Array.from(boxes[0].dataSync()), scores: Array.from(scores[0].dataSync()) };
  const ms = performance.now() - t0;
  tf.dispose([...boxes, ...scores]);
  const found = await net.locateFaces(input); // face-api's defaults: minConfidence 0.5, maxResults 100
  input.dispose();
  const detections = found.map((d) => ({
    score: d.score, box: [d.box.x, d.box.y, d.box.x + d.box.width, d.box.y + d.box.height],
  }));
  return { size, ms, boxes_yxyx: raw.boxes, scores: raw.scores, detections };
}

async function runLandmarks(net, item, warmUp) {
  const input = readTensor(item);
  if (warmUp) await net.detectLandmarks(input);
  const t0 = performance.now();
  const marks = await net.detectLandmarks(input);
  const ms = performance.now() - t0;
  input.dispose();
  return { ms, points: marks.positions.map((p) => [p.x, p.y]) }; // pixels of the 112x112 input
}

function batchTensor(item) {
  const image = readTensor(item);
  const out = new faceapi.NetInput([image]).toBatchTensor(item.size, item.center);
  writeFileSync(item.output, Buffer.from(out.dataSync().buffer));
  tf.dispose([image, out]);
  return { output: item.output, shape: out.shape };
}

async function main() {
  const request = JSON.parse(readFileSync(0, 'utf8'));
  wasm.setWasmPaths(path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm')), path.sep));
  await tf.setBackend('wasm');
  await tf.ready();
  const [, loadMs] = timed(() => {
    faceapi.nets.ssdMobilenetv1.loadFromWeightMap(loadWeightMap(request.model_dir, 'ssd_mobilenetv1_model'));
    faceapi.nets.faceLandmark68Net.loadFromWeightMap(loadWeightMap(request.model_dir, 'face_landmark_68_model'));
  });
  const answer = {
    versions: { faceapi: faceapi.version, tfjs: tf.version.tfjs, backend: tf.getBackend() },
    load_ms: loadMs, ssd: [], landmarks: [], batch_tensor: [],
  };
  for (const [i, item] of (request.ssd || []).entries()) {
    answer.ssd.push(await runSsd(faceapi.nets.ssdMobilenetv1, item, i === 0));
  }
  for (const [i, item] of (request.landmarks || []).entries()) {
    answer.landmarks.push(await runLandmarks(faceapi.nets.faceLandmark68Net, item, i === 0));
  }
  for (const item of request.batch_tensor || []) answer.batch_tensor.push(batchTensor(item));
  process.stdout.write(JSON.stringify(answer));
}

main().catch((err) => { process.stderr.write(`${err.stack || err}\n`); process.exit(1); });
