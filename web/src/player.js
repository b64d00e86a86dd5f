// The avatarcli web player: one avatar, one motion, Gaussians skinned on the GPU every frame.
//
// `avatar export AVATAR --motion MOTION -o page.html` writes a page holding this bundle and the
// avatar's data (see avatarcli/formats/web_player.py for the arrays). Rendering is Spark's
// (@sparkjsdev/spark) on three.js; the skinning is a Spark "dyno" object modifier that runs in
// Spark's splat generator on the GPU:
//   centre'  = centre + sum_k e_k * D_k          (expression offsets, rest space; first M splats)
//   centre'' = (sum_i w_i A_i) [centre'; 1]      (linear-blend skinning over each splat's joints)
//   quat'    = normalize(sum_i w_i q_i) * quat   (blended joint rotation)
// A_i and q_i come from forward kinematics of the motion's joint rotations, done here each frame.
//
// URL hash options: t=SECONDS (start paused at that time), ui=0 (no controls), speed=X.
// window.avatarPlayer exposes play(), pause(), setTime(t), the time and a count of drawn frames.
import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { PackedSplats, SparkRenderer, SplatMesh, dyno } from "@sparkjsdev/spark";

// ---------------------------------------------------------------- data
const meta = JSON.parse(document.getElementById("avatar-meta").textContent);
const blob = decodeBase64(document.getElementById("avatar-data").textContent.trim());

function decodeBase64(text) {
  if (Uint8Array.fromBase64) return Uint8Array.fromBase64(text);
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

const TYPED = { float32: Float32Array, float16: Uint16Array, uint8: Uint8Array, uint16: Uint16Array, int32: Int32Array };
function array(name) {
  const a = meta.arrays[name];
  const count = a.shape.reduce((x, y) => x * y, 1);
  return new TYPED[a.dtype](blob.buffer, blob.byteOffset + a.offset, count);
}
function halfToFloat(h) {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}
const halves = (name) => Float32Array.from(array(name), halfToFloat);

const N = meta.numSplats, M = meta.numExprSplats, K = meta.numExpr, J = meta.numJoints, F = meta.numFrames;
const centers = array("centers"), scales = halves("scales"), quats = halves("quats"), colors = array("colors");
const influences = array("influences"), influenceJoints = array("influenceJoints"), influenceWeights = halves("influenceWeights");
const restJoints = array("restJoints"), localRot = array("rotations"), rootTrans = array("translation");
const exprFrames = array("expression"), eyes = array("eyes"), targets = array("targets");
const parents = meta.parents;
const duration = F > 1 ? (F - 1) / meta.fps : 0;

// ---------------------------------------------------------------- page
const params = new URLSearchParams(location.hash.slice(1));
const showUi = params.get("ui") !== "0";
const speed = parseFloat(params.get("speed") || "1");
document.body.style.cssText = "margin:0;height:100vh;overflow:hidden;background:#fff;font:13px system-ui,sans-serif";

const renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true });
renderer.setPixelRatio(Math.min(window.devicePixelRatio, 2));
renderer.setSize(window.innerWidth, window.innerHeight);
renderer.domElement.style.display = "block";
document.body.appendChild(renderer.domElement);

const scene = new THREE.Scene();
const [br, bg, bb] = meta.background;
scene.background = new THREE.Color().setRGB(br, bg, bb, THREE.SRGBColorSpace);
const camera = new THREE.PerspectiveCamera(meta.fovy, window.innerWidth / window.innerHeight, 0.01, 1000);
const controls = new OrbitControls(camera, renderer.domElement);
controls.enableDamping = false;
window.addEventListener("resize", () => {
  renderer.setSize(window.innerWidth, window.innerHeight);
  camera.aspect = window.innerWidth / window.innerHeight;
  camera.updateProjectionMatrix();
});

// preBlurAmount 0.3 and a 3-sigma extent: how avatarcli's rasterizer (gsplat's classic mode) draws
const spark = new SparkRenderer({ renderer, preBlurAmount: 0.3, maxStdDev: 3.0 });
scene.add(spark);

const packed = new PackedSplats({ maxSplats: N });
{
  const c = new THREE.Vector3(), s = new THREE.Vector3(), q = new THREE.Quaternion(), col = new THREE.Color();
  for (let i = 0; i < N; i++) {
    c.fromArray(centers, 3 * i);
    s.fromArray(scales, 3 * i);
    q.fromArray(quats, 4 * i).normalize();
    // colours go in as they are (display sRGB), the way avatarcli renders them
    col.setRGB(colors[4 * i] / 255, colors[4 * i + 1] / 255, colors[4 * i + 2] / 255, THREE.LinearSRGBColorSpace);
    packed.pushSplat(c, s, q, colors[4 * i + 3] / 255, col);
  }
}
const mesh = new SplatMesh({ packedSplats: packed });
scene.add(mesh);

// ---------------------------------------------------------------- GPU skinning
const TEX_WIDTH = 2048;
function rgbaTexture(data, texels, type) {
  const height = Math.max(1, Math.ceil(texels / TEX_WIDTH));
  const full = new data.constructor(TEX_WIDTH * height * 4);
  full.set(data);
  const t = new THREE.DataTexture(full, TEX_WIDTH, height, THREE.RGBAFormat, type);
  t.internalFormat = type === THREE.FloatType ? "RGBA32F" : "RGBA16F";
  t.needsUpdate = true;
  return t;
}
// each splat's joints and weights, two (joint, weight) pairs a texel, splat after splat, the
// weights renormalised after float16; and a texel a splat saying where its pairs start, how many
const numInfluences = influenceJoints.length;
const pairs = new Float32Array(2 * numInfluences + 2);
const starts = new Float32Array(4 * N);
for (let i = 0, at = 0; i < N; i++) {
  let sum = 0;
  for (let k = 0; k < influences[i]; k++) sum += influenceWeights[at + k];
  starts[4 * i] = at;
  starts[4 * i + 1] = influences[i];
  for (let k = 0; k < influences[i]; k++, at++) {
    pairs[2 * at] = influenceJoints[at];
    pairs[2 * at + 1] = influenceWeights[at] / sum;
  }
}
const startTex = rgbaTexture(starts, N, THREE.FloatType);
const skinTex = rgbaTexture(pairs, Math.ceil(numInfluences / 2), THREE.FloatType);
// one texel per splat and expression component: the offset x, y, z (float16 bits as stored)
const exprHalf = array("expr");
const exprRgba = new Uint16Array(Math.max(1, M * K) * 4);
for (let t = 0; t < M * K; t++) for (let a = 0; a < 3; a++) exprRgba[4 * t + a] = exprHalf[3 * t + a];
const exprTex = rgbaTexture(exprRgba, Math.max(1, M * K), THREE.HalfFloatType);
// the pose: row j holds joint j's skinning transform (3 texels, rows of [R|t]) and rotation
// (x, y, z, w); the rows after the joints hold the expression coefficients, 16 a row
const poseRows = J + Math.ceil(Math.max(K, 1) / 16);
const pose = new Float32Array(16 * poseRows);
const poseTex = new THREE.DataTexture(pose, 4, poseRows, THREE.RGBAFormat, THREE.FloatType);
poseTex.internalFormat = "RGBA32F";
poseTex.needsUpdate = true;

const GLSL = `
vec4 avatarTexel(sampler2D tex, int i) {
  int w = textureSize(tex, 0).x;
  return texelFetch(tex, ivec2(i % w, i / w), 0);
}
vec4 avatarQuatMul(vec4 a, vec4 b) {
  return vec4(a.w * b.xyz + b.w * a.xyz + cross(a.xyz, b.xyz), a.w * b.w - dot(a.xyz, b.xyz));
}
void avatarSkin(sampler2D startTex, sampler2D skinTex, sampler2D exprTex, sampler2D poseTex, int numJoints, int numExpr,
                int numExprSplats, int index, inout vec3 center, inout vec4 quaternion) {
  if (index < numExprSplats) {
    for (int k = 0; k < numExpr; k++) {
      int slot = k % 16;
      float e = texelFetch(poseTex, ivec2(slot / 4, numJoints + k / 16), 0)[slot % 4];
      center += e * avatarTexel(exprTex, index * numExpr + k).xyz;
    }
  }
  vec4 range = avatarTexel(startTex, index);
  int start = int(range.x + 0.5), count = int(range.y + 0.5);
  vec4 r0 = vec4(0.0), r1 = vec4(0.0), r2 = vec4(0.0), q = vec4(0.0);
  for (int i = start; i < start + count; i++) {
    vec4 pair = avatarTexel(skinTex, i / 2);
    vec2 jw = (i % 2 == 0) ? pair.xy : pair.zw;
    float w = jw.y;
    int j = int(jw.x + 0.5);
    r0 += w * texelFetch(poseTex, ivec2(0, j), 0);
    r1 += w * texelFetch(poseTex, ivec2(1, j), 0);
    r2 += w * texelFetch(poseTex, ivec2(2, j), 0);
    q += w * texelFetch(poseTex, ivec2(3, j), 0);
  }
  vec4 p = vec4(center, 1.0);
  center = vec3(dot(r0, p), dot(r1, p), dot(r2, p));
  quaternion = avatarQuatMul(normalize(q), quaternion);
}`;

const inputs = {
  startTex: dyno.dynoSampler2D(startTex, "avatarStartTex"),
  skinTex: dyno.dynoSampler2D(skinTex, "avatarSkinTex"),
  exprTex: dyno.dynoSampler2D(exprTex, "avatarExprTex"),
  poseTex: dyno.dynoSampler2D(poseTex, "avatarPoseTex"),
  numJoints: dyno.dynoInt(J, "avatarNumJoints"),
  numExpr: dyno.dynoInt(K, "avatarNumExpr"),
  numExprSplats: dyno.dynoInt(M, "avatarNumExprSplats"),
};
mesh.objectModifier = dyno.dynoBlock({ gsplat: dyno.Gsplat }, { gsplat: dyno.Gsplat }, ({ gsplat }) => {
  const d = new dyno.Dyno({
    inTypes: { gsplat: dyno.Gsplat, startTex: "sampler2D", skinTex: "sampler2D", exprTex: "sampler2D", poseTex: "sampler2D", numJoints: "int",
      numExpr: "int", numExprSplats: "int" },
    outTypes: { gsplat: dyno.Gsplat },
    inputs: { gsplat, ...inputs },
    globals: () => [GLSL],
    statements: ({ inputs: a, outputs: o }) => [
      `${o.gsplat} = ${a.gsplat};`,
      `if (isGsplatActive(${o.gsplat}.flags)) {`,
      `  avatarSkin(${a.startTex}, ${a.skinTex}, ${a.exprTex}, ${a.poseTex}, ${a.numJoints}, ${a.numExpr}, ${a.numExprSplats},`,
      `             ${o.gsplat}.index, ${o.gsplat}.center, ${o.gsplat}.quaternion);`,
      `}`,
    ],
  });
  return { gsplat: d.outputs.gsplat };
});
mesh.updateGenerator();

// ---------------------------------------------------------------- the motion at time t
function quatMul(a, ao, b, bo, out, oo) {
  const [ax, ay, az, aw] = [a[ao], a[ao + 1], a[ao + 2], a[ao + 3]];
  const [bx, by, bz, bw] = [b[bo], b[bo + 1], b[bo + 2], b[bo + 3]];
  out[oo] = aw * bx + bw * ax + ay * bz - az * by;
  out[oo + 1] = aw * by + bw * ay + az * bx - ax * bz;
  out[oo + 2] = aw * bz + bw * az + ax * by - ay * bx;
  out[oo + 3] = aw * bw - ax * bx - ay * by - az * bz;
}
const local = new Float64Array(4 * J), worldQ = new Float64Array(4 * J), worldT = new Float64Array(3 * J);
const worldR = new Float64Array(9 * J), root = new THREE.Vector3(), target = new THREE.Vector3(), eye = new THREE.Vector3();
const expr = new Float64Array(K);

function frameAt(t) {
  const x = Math.min(Math.max(t * meta.fps, 0), F - 1);
  const f0 = Math.floor(x), f1 = Math.min(f0 + 1, F - 1), a = x - f0;
  return [f0, f1, a];
}

function setPose(t) {
  const [f0, f1, a] = frameAt(t);
  for (let j = 0; j < J; j++) { // normalised lerp of local rotations, the short way
    const o0 = 4 * (f0 * J + j), o1 = 4 * (f1 * J + j);
    let dot = 0;
    for (let c = 0; c < 4; c++) dot += localRot[o0 + c] * localRot[o1 + c];
    const b = dot < 0 ? -a : a;
    let n = 0;
    for (let c = 0; c < 4; c++) { local[4 * j + c] = (1 - a) * localRot[o0 + c] + b * localRot[o1 + c]; n += local[4 * j + c] ** 2; }
    n = Math.sqrt(n);
    for (let c = 0; c < 4; c++) local[4 * j + c] /= n;
  }
  for (let c = 0; c < 3; c++) {
    root.setComponent(c, (1 - a) * rootTrans[3 * f0 + c] + a * rootTrans[3 * f1 + c]);
    target.setComponent(c, (1 - a) * targets[3 * f0 + c] + a * targets[3 * f1 + c]);
    eye.setComponent(c, (1 - a) * eyes[3 * f0 + c] + a * eyes[3 * f1 + c]);
  }
  for (let k = 0; k < K; k++) expr[k] = (1 - a) * exprFrames[f0 * K + k] + a * exprFrames[f1 * K + k];
  // forward kinematics: world rotation and position of every joint (parents come first)
  for (let j = 0; j < J; j++) {
    const p = parents[j];
    if (p < 0) {
      for (let c = 0; c < 4; c++) worldQ[4 * j + c] = local[4 * j + c];
      for (let c = 0; c < 3; c++) worldT[3 * j + c] = restJoints[3 * j + c] + root.getComponent(c);
    } else {
      quatMul(worldQ, 4 * p, local, 4 * j, worldQ, 4 * j);
      let dot = 0;
      for (let c = 0; c < 4; c++) dot += worldQ[4 * j + c] * worldQ[4 * p + c];
      if (dot < 0) for (let c = 0; c < 4; c++) worldQ[4 * j + c] *= -1; // blend with the parent the short way
      for (let r = 0; r < 3; r++) {
        let v = 0;
        for (let c = 0; c < 3; c++) v += worldR[9 * p + 3 * r + c] * (restJoints[3 * j + c] - restJoints[3 * p + c]);
        worldT[3 * j + r] = worldT[3 * p + r] + v;
      }
    }
    const [x, y, z, w] = [worldQ[4 * j], worldQ[4 * j + 1], worldQ[4 * j + 2], worldQ[4 * j + 3]];
    const R = [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
      2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
      2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)];
    worldR.set(R, 9 * j);
    // skinning transform A = [R | t - R J_rest], its translation taken relative to the root,
    // which moves the whole mesh instead (centres stay small numbers on the GPU)
    for (let r = 0; r < 3; r++) {
      let v = worldT[3 * j + r] - root.getComponent(r);
      for (let c = 0; c < 3; c++) v -= R[3 * r + c] * restJoints[3 * j + c];
      for (let c = 0; c < 3; c++) pose[16 * j + 4 * r + c] = R[3 * r + c];
      pose[16 * j + 4 * r + 3] = v;
    }
    for (let c = 0; c < 4; c++) pose[16 * j + 12 + c] = worldQ[4 * j + c];
  }
  for (let k = 0; k < K; k++) pose[16 * J + k] = expr[k];
  poseTex.needsUpdate = true;
  mesh.position.copy(root);
  mesh.needsUpdate = true; // run the generator, and so the skinning, again
}

// the camera: the one `avatar animate` uses, moved along with a travelling subject; the mouse orbits
function placeCamera(t, first) {
  const old = controls.target.clone();
  setPose(t);
  if (first) {
    camera.position.copy(eye);
    controls.target.copy(target);
  } else {
    camera.position.add(target.clone().sub(old));
    controls.target.copy(target);
  }
  controls.update();
}

// ---------------------------------------------------------------- playback and controls
let time = params.has("t") ? Math.min(Math.max(parseFloat(params.get("t")) || 0, 0), duration) : 0;
let playing = !params.has("t") && duration > 0;
let clockStart = performance.now() - (time / speed) * 1000;
let framesDrawn = 0;
placeCamera(time, true);

let button, slider, label;
if (showUi) {
  const bar = document.createElement("div");
  bar.style.cssText = "position:fixed;left:12px;right:12px;bottom:12px;display:flex;gap:10px;align-items:center;" +
    "padding:6px 10px;background:rgba(255,255,255,.85);border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.2)";
  button = document.createElement("button");
  button.style.cssText = "width:64px";
  slider = Object.assign(document.createElement("input"), { type: "range", min: 0, max: duration, step: 1 / meta.fps, value: time });
  slider.style.cssText = "flex:1";
  label = document.createElement("span");
  label.style.cssText = "min-width:90px;text-align:right;font-variant-numeric:tabular-nums";
  const title = document.createElement("span");
  title.textContent = meta.motion;
  bar.append(button, slider, label, title);
  document.body.appendChild(bar);
  button.addEventListener("click", () => (playing ? pause() : play()));
  slider.addEventListener("input", () => { pause(); setTime(parseFloat(slider.value)); });
  window.addEventListener("keydown", (e) => { if (e.code === "Space") { e.preventDefault(); playing ? pause() : play(); } });
}
function updateUi() {
  if (!showUi) return;
  button.textContent = playing ? "Pause" : "Play";
  slider.value = time;
  label.textContent = `${time.toFixed(2)} / ${duration.toFixed(2)} s`;
}
function play() {
  if (duration <= 0) return;
  if (time >= duration) time = 0;
  playing = true;
  clockStart = performance.now() - (time / speed) * 1000;
  updateUi();
}
function pause() {
  playing = false;
  updateUi();
}
function setTime(t) {
  time = Math.min(Math.max(t, 0), duration);
  clockStart = performance.now() - (time / speed) * 1000;
  placeCamera(time, false);
  updateUi();
}
updateUi();

renderer.setAnimationLoop(() => {
  if (playing) {
    time = (((performance.now() - clockStart) / 1000) * speed) % (duration + 1 / meta.fps);
    time = Math.min(time, duration);
    placeCamera(time, false);
    updateUi();
  }
  controls.update();
  renderer.render(scene, camera);
  framesDrawn++;
});

window.avatarPlayer = {
  meta, play, pause, setTime,
  get time() { return time; },
  get playing() { return playing; },
  get framesDrawn() { return framesDrawn; },
  ready: mesh.initialized,
};
