// Builds the dashboard into dist/: index.html, and the script and style it
// loads under assets/, named by a hash of their content (so browsers may
// cache them for good). The output depends only on the sources, so
// `make check-generated` can rebuild it and compare with what is committed.
import { createHash } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import * as esbuild from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.resolve(process.argv[2] ?? path.join(here, "dist"));

rmSync(out, { recursive: true, force: true });
const result = await esbuild.build({
  // esbuild's content hashes take in the sources' paths relative to the
  // working folder: fixed, so that any folder builds the same names.
  absWorkingDir: here,
  entryPoints: [path.join(here, "src/main.ts")],
  outdir: path.join(out, "assets"),
  entryNames: "[name]-[hash]",
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  platform: "browser",
  tsconfig: path.join(here, "tsconfig.json"),
  legalComments: "none",
  metafile: true,
  logLevel: "warning",
});

const assets = Object.keys(result.metafile.outputs).map((file) => "/" + path.relative(out, path.resolve(here, file)));
const script = assets.find((file) => file.endsWith(".js"));
const style = assets.find((file) => file.endsWith(".css"));
// The tab's icon, named by its content like the rest (browsers ask for one,
// and a 404 would be an error in every console).
const icon = readFileSync(path.join(here, "src/favicon.svg"));
const iconName = `/assets/favicon-${createHash("sha256").update(icon).digest("hex").slice(0, 8).toUpperCase()}.svg`;
writeFileSync(path.join(out, iconName), icon);
// No inline script or style: the Content-Security-Policy allows neither.
writeFileSync(
  path.join(out, "index.html"),
  `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>htk</title>
<link rel="icon" href="${iconName}" type="image/svg+xml">
<link rel="stylesheet" href="${style}">
<script type="module" src="${script}"></script>
</head>
<body>
<div id="app"><noscript>htk's dashboard needs JavaScript.</noscript></div>
</body>
</html>
`,
);
