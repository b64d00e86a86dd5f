// Build the web player bundle that `avatar export ... -o page.html` inlines:
//   cd web && npm ci && node build.mjs [--out DIR]
// writes player.js (one minified script: three.js, Spark and src/player.js, the licence notices
// of every bundled package at its top) and LICENSES.txt into DIR, by default
// ../avatarcli/formats/web, where the Python package ships them. Versions are pinned in
// package.json and package-lock.json, so a rebuild gives the same bytes.
import { build } from "esbuild";
import fs from "node:fs";
import path from "node:path";
import url from "node:url";

const here = path.dirname(url.fileURLToPath(import.meta.url));
const outFlag = process.argv.indexOf("--out");
const outDir = outFlag > 0 ? path.resolve(process.argv[outFlag + 1]) : path.join(here, "..", "avatarcli", "formats", "web");

const result = await build({
  entryPoints: [path.join(here, "src", "player.js")],
  bundle: true,
  format: "iife",
  minify: true,
  target: "es2020",
  legalComments: "none", // the full licence texts go in the banner instead
  metafile: true,
  write: false,
  logLevel: "warning",
});

// every package the bundle holds code of, and (for code that was inlined into a package's own
// build, as Spark's is) that package's runtime dependencies
function packageDir(file) {
  const parts = file.split("/");
  const i = parts.lastIndexOf("node_modules");
  if (i < 0) return null;
  const n = parts[i + 1].startsWith("@") ? 2 : 1;
  return path.join(here, ...parts.slice(0, i + 1 + n));
}
const dirs = new Set();
function addPackage(dir) {
  if (!dir || dirs.has(dir) || !fs.existsSync(path.join(dir, "package.json"))) return;
  dirs.add(dir);
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
  for (const dep of Object.keys(pkg.dependencies || {})) addPackage(path.join(here, "node_modules", dep));
}
for (const file of Object.keys(result.metafile.inputs)) addPackage(packageDir(file));
const notices = [...dirs].sort().map((dir) => {
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
  const licence = ["LICENSE", "LICENSE.md", "LICENSE.txt", "license"].map((f) => path.join(dir, f)).find((f) => fs.existsSync(f));
  if (!licence) throw new Error(`${pkg.name} has no licence file`);
  return `${pkg.name} ${pkg.version} (${pkg.license})\n\n${fs.readFileSync(licence, "utf8").trim()}`;
});
const licences = notices.join("\n\n" + "-".repeat(72) + "\n\n") + "\n";

let js = result.outputFiles[0].text;
// an inline <script> ends at the first "</script": none may be left in the bundle
const closing = (js.match(/<\/script/gi) || []).length;
js = js.replace(/<\/script/gi, "<\\/script");
const banner = "/*!\n * avatarcli web player (web/src/player.js), bundled with:\n *\n" +
  licences.replace(/\*\//g, "* /").split("\n").map((l) => (" * " + l).trimEnd()).join("\n") + "\n */\n";

fs.mkdirSync(outDir, { recursive: true });
fs.writeFileSync(path.join(outDir, "player.js"), banner + js);
fs.writeFileSync(path.join(outDir, "LICENSES.txt"), licences);
console.log(JSON.stringify({
  out: path.relative(process.cwd(), path.join(outDir, "player.js")),
  bytes: banner.length + js.length,
  packages: [...dirs].map((d) => path.relative(path.join(here, "node_modules"), d)),
  escapedScriptTags: closing,
}));
