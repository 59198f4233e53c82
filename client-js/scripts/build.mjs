// Builds dist/ (ESM + IIFE bundles, .d.ts) and copies the IIFE bundle into the hub's demo page.
// `npm pack` runs it (prepack), so the tarball always holds what package.json points at.
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
  // The maps point into src/, which the package ships: no need to repeat the sources inside them.
  sourcesContent: false,
  logLevel: 'warning',
};

// The JSON-only IIFE: @msgpack/msgpack replaced by a stub that says which file to load instead.
const withoutMsgpack = {
  name: 'without-msgpack',
  setup(b) {
    b.onResolve({ filter: /^@msgpack\/msgpack$/ }, () => ({ path: 'msgpack', namespace: 'without-msgpack' }));
    b.onLoad({ filter: /.*/, namespace: 'without-msgpack' }, () => ({
      loader: 'js',
      contents: `const missing = () => {
  throw new Error("protocol 'msgpack' needs hub-client.iife.min.js: this JSON-only build (hub-client.json.iife.min.js) has no msgpack codec");
};
export const encode = missing;
export const decode = missing;`,
    }));
  },
};

await Promise.all([
  // For bundlers: msgpack stays a dependency so the app's bundler can share it.
  build({ ...common, format: 'esm', outfile: join(dist, 'hub-client.mjs'), external: ['@msgpack/msgpack'], sourcemap: true }),
  // Self-contained ESM for a <script type="module"> without a bundler.
  build({ ...common, format: 'esm', outfile: join(dist, 'hub-client.bundle.min.mjs'), minify: true, sourcemap: true }),
  // <script src>: window.NotificationHub.HubClient
  build({ ...common, format: 'iife', globalName: 'NotificationHub', outfile: join(dist, 'hub-client.iife.js') }),
  build({ ...common, format: 'iife', globalName: 'NotificationHub', outfile: join(dist, 'hub-client.iife.min.js'), minify: true, sourcemap: true }),
  // The same without msgpack, for pages that use the default JSON protocol.
  build({ ...common, format: 'iife', globalName: 'NotificationHub', outfile: join(dist, 'hub-client.json.iife.js'), plugins: [withoutMsgpack] }),
  build({
    ...common,
    format: 'iife',
    globalName: 'NotificationHub',
    outfile: join(dist, 'hub-client.json.iife.min.js'),
    minify: true,
    sourcemap: true,
    plugins: [withoutMsgpack],
  }),
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
    ['IIFE (JSON only)', readFileSync(join(dist, 'hub-client.json.iife.min.js'))],
  ];
  for (const [name, bytes] of rows) {
    console.log(`${name.padEnd(24)} min ${String(bytes.length).padStart(6)} B   min+gzip ${String(gzipSync(bytes, { level: 9 }).length).padStart(6)} B`);
  }
}
