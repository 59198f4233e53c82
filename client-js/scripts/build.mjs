// Builds dist/ (ESM + IIFE bundles, .d.ts) and copies the IIFE bundle into the hub's demo page.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const demo = join(root, '..', 'hub', 'static', 'demo');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const banner = `/* ${pkg.name} ${pkg.version} | ${pkg.license} */`;

rmSync(dist, { recursive: true, force: true });
const common = {
  entryPoints: [join(root, 'src', 'index.ts')],
  bundle: true,
  target: ['es2020'],
  platform: 'browser',
  banner: { js: banner },
  legalComments: 'none',
  logLevel: 'warning',
};

await Promise.all([
  // For bundlers: msgpack stays a dependency so the app's bundler can share it.
  build({ ...common, format: 'esm', outfile: join(dist, 'hub-client.mjs'), external: ['@msgpack/msgpack'], sourcemap: true }),
  // Self-contained ESM for a <script type="module"> without a bundler.
  build({ ...common, format: 'esm', outfile: join(dist, 'hub-client.bundle.min.mjs'), minify: true, sourcemap: true }),
  // <script src>: window.NotificationHub.HubClient
  build({ ...common, format: 'iife', globalName: 'NotificationHub', outfile: join(dist, 'hub-client.iife.js') }),
  build({ ...common, format: 'iife', globalName: 'NotificationHub', outfile: join(dist, 'hub-client.iife.min.js'), minify: true, sourcemap: true }),
]);

execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'tsconfig.build.json')], {
  stdio: 'inherit',
});

// The demo page gets the minified IIFE without its source-map comment (the map is not served).
mkdirSync(demo, { recursive: true });
const iife = readFileSync(join(dist, 'hub-client.iife.min.js'), 'utf8').replace(/\n\/\/# sourceMappingURL=.*\n?$/, '\n');
writeFileSync(join(demo, 'hub-client.js'), iife);

if (!process.argv.includes('--quiet')) {
  // Sizes as shipped, min+gzip: the ESM entry is measured minified (its consumers minify it).
  const esmMin = await build({ ...common, format: 'esm', external: ['@msgpack/msgpack'], minify: true, write: false, banner: {} });
  const rows = [
    ['ESM (msgpack external)', esmMin.outputFiles[0].contents],
    ['ESM (self-contained)', readFileSync(join(dist, 'hub-client.bundle.min.mjs'))],
    ['IIFE (self-contained)', readFileSync(join(dist, 'hub-client.iife.min.js'))],
  ];
  for (const [name, bytes] of rows) {
    console.log(`${name.padEnd(24)} min ${String(bytes.length).padStart(6)} B   min+gzip ${String(gzipSync(bytes, { level: 9 }).length).padStart(6)} B`);
  }
}
