// Read a splat file with the PlayCanvas engine (the engine SuperSplat runs on) in a browser: a
// KHR_gaussian_splatting .glb through its glTF loader, a .ply or .compressed.ply through its
// splat loader (compressed data decompressed), and report what it read: window.readResult
// resolves to {ok, count, sums: {property: sum over Gaussians}} (sums, because the engine may
// reorder). check_exports.py bundles this with esbuild into a page that holds the file as
// base64 in <script id="file" data-name="NAME">.
import * as pc from "playcanvas";

window.readResult = (async () => {
  const holder = document.getElementById("file");
  const name = holder.dataset.name;
  const text = holder.textContent.trim();
  const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  const canvas = document.createElement("canvas");
  document.body.appendChild(canvas);
  const device = await pc.createGraphicsDevice(canvas, { deviceTypes: ["webgl2"], antialias: false });
  const app = new pc.AppBase(canvas);
  const options = new pc.AppOptions();
  options.graphicsDevice = device;
  options.componentSystems = [pc.RenderComponentSystem, pc.CameraComponentSystem, pc.GSplatComponentSystem];
  options.resourceHandlers = [pc.ContainerHandler, pc.GSplatHandler, pc.TextureHandler];
  app.init(options);
  app.start();
  const glb = name.endsWith(".glb");
  const url = URL.createObjectURL(new Blob([bytes]));
  const asset = glb ? new pc.Asset(name, "container", { url, filename: name }) : new pc.Asset(name, "gsplat", { url, filename: name }, { decompress: true });
  const loaded = new Promise((resolve, reject) => {
    asset.on("load", resolve);
    asset.on("error", (e) => reject(new Error(String(e))));
  });
  app.assets.add(asset);
  app.assets.load(asset);
  await loaded;
  const splats = glb ? asset.resource.gsplats || [] : [asset];
  if (!splats.length) return { ok: false, error: "the engine found no Gaussian splats in the file" };
  const data = splats[0].resource.gsplatData;
  const sums = {};
  for (const element of data.elements) {
    for (const p of element.properties) {
      if (!p.storage) continue;
      let s = 0;
      for (let i = 0; i < p.storage.length; i++) s += p.storage[i];
      sums[p.name] = s;
    }
  }
  return { ok: true, engine: pc.version, splatAssets: splats.length, count: data.numSplats, sums };
})().catch((e) => ({ ok: false, error: String(e && e.message ? e.message : e) }));
