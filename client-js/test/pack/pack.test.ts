// The npm package as a user gets it: `npm pack` (its prepack builds dist/), the tarball
// installed into a scratch project, imported from Node, type-checked by tsc, and both IIFE
// files loaded in headless Chromium. A missing Chromium is a failure, never a skip.
//
// The install is offline: `npm ci --offline` with a lockfile naming the tarball and the
// @msgpack/msgpack that client-js's own lockfile pins, whose tarball is in the npm cache
// since `npm ci` in client-js (`npm install <tgz>` without a lockfile would need the
// registry's full metadata for @msgpack/msgpack, which npm does not cache).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

// .build/test/pack/<file>.mjs → client-js/
const CLIENT_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';
const NAME = '@notification-hub/client';

interface PackResult {
  filename: string;
  integrity: string;
  size: number;
  unpackedSize: number;
  entryCount: number;
  files: { path: string }[];
}

function run(cmd: string, args: string[], cwd: string): string {
  try {
    return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed in ${cwd}: ${e.message}\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
}

describe('the packed npm package', () => {
  let scratch: string;
  let packed: PackResult;
  let installed: string;

  before(() => {
    scratch = mkdtempSync(join(tmpdir(), 'hub-client-pack-'));
    // `npm pack` prints the prepack build's output before its JSON: take the JSON array at the end.
    const out = run('npm', ['pack', '--json', '--pack-destination', scratch], CLIENT_DIR);
    packed = (JSON.parse(out.slice(out.lastIndexOf('\n[') + 1)) as PackResult[])[0]!;
    const tarball = `file:${packed.filename}`;
    const manifest = JSON.parse(readFileSync(join(CLIENT_DIR, 'package.json'), 'utf8')) as { version: string; dependencies: Record<string, string> };
    const lock = JSON.parse(readFileSync(join(CLIENT_DIR, 'package-lock.json'), 'utf8')) as { packages: Record<string, object> };
    const dependencies = { [NAME]: tarball };
    writeFileSync(join(scratch, 'package.json'), JSON.stringify({ name: 'scratch', private: true, type: 'module', dependencies }));
    const packages: Record<string, object> = {
      '': { name: 'scratch', dependencies },
      [`node_modules/${NAME}`]: { version: manifest.version, resolved: tarball, integrity: packed.integrity, dependencies: manifest.dependencies },
    };
    for (const dep of Object.keys(manifest.dependencies)) packages[`node_modules/${dep}`] = lock.packages[`node_modules/${dep}`]!;
    writeFileSync(join(scratch, 'package-lock.json'), JSON.stringify({ name: 'scratch', lockfileVersion: 3, requires: true, packages }));
    run('npm', ['ci', '--offline', '--no-audit', '--no-fund', '--ignore-scripts'], scratch);
    installed = join(scratch, 'node_modules', ...NAME.split('/'));
    console.log(
      `# ${packed.filename}: ${packed.size} B packed, ${packed.unpackedSize} B unpacked, ${packed.entryCount} files`,
    );
  });

  after(() => {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('holds every file package.json points at, a LICENSE, and nothing of the repository besides', () => {
    const files = new Set(packed.files.map((f) => f.path));
    const pkg = JSON.parse(readFileSync(join(CLIENT_DIR, 'package.json'), 'utf8')) as {
      main: string;
      module: string;
      types: string;
      exports: Record<string, string | Record<string, string>>;
    };
    const targets = [pkg.main, pkg.module, pkg.types];
    for (const [key, target] of Object.entries(pkg.exports)) {
      if (key.includes('*')) continue;
      targets.push(...(typeof target === 'string' ? [target] : Object.values(target)));
    }
    for (const target of targets) {
      assert.ok(files.has(target.replace(/^\.\//, '')), `${target} is not in the tarball: ${[...files].join(', ')}`);
    }
    for (const file of ['LICENSE', 'README.md', 'dist/hub-client.json.iife.min.js', 'dist/types/client.d.ts']) {
      assert.ok(files.has(file), `${file} is not in the tarball`);
    }
    assert.deepEqual(
      [...files].filter((f) => /^(test|scripts|node_modules|\.build)\//.test(f) || f.startsWith('tsconfig')),
      [],
    );
    const license = readFileSync(join(installed, 'LICENSE'), 'utf8');
    assert.equal(license, readFileSync(join(CLIENT_DIR, '..', 'LICENSE'), 'utf8'), 'client-js/LICENSE is the repository LICENSE');
    assert.match(license, /^MIT License/);
  });

  it('imports from Node as ESM, with @msgpack/msgpack resolved from the installing project', () => {
    const script = `
      import * as hub from '${NAME}';
      const bytes = hub.msgpackCodec.encode({ type: 'pong' });
      console.log(JSON.stringify({
        exports: Object.keys(hub).sort(),
        client: typeof new hub.HubClient({ url: 'ws://127.0.0.1:1/ws', getToken: async () => 't', watchBrowser: false }).connect,
        msgpack: bytes instanceof Uint8Array && hub.msgpackCodec.decode(bytes).type,
        json: hub.jsonCodec.decode('{"type":"ping"}').type,
        code: hub.CloseCode.SERVICE_RESTART ?? null,
      }));`;
    const result = JSON.parse(run(process.execPath, ['--input-type=module', '-e', script], scratch)) as Record<string, unknown>;
    for (const name of ['HubClient', 'HubClientError', 'CloseCode', 'jsonCodec', 'msgpackCodec', 'SUBPROTOCOLS', 'decodeClaims']) {
      assert.ok((result['exports'] as string[]).includes(name), `${name} is not exported: ${String(result['exports'])}`);
    }
    assert.equal(result['client'], 'function');
    assert.equal(result['msgpack'], 'pong');
    assert.equal(result['json'], 'ping');
    assert.equal(result['code'], 1012);
    assert.ok(existsSync(join(scratch, 'node_modules', '@msgpack', 'msgpack', 'package.json')));
  });

  it('gives TypeScript its declarations (a wrong option is a type error)', () => {
    writeFileSync(
      join(scratch, 'check.ts'),
      `import { HubClient, type HubNotification } from '${NAME}';
const client = new HubClient({ url: 'wss://hub.example.com/ws', getToken: async () => 'token', protocol: 'msgpack' });
client.on('notification', (n: HubNotification) => console.log(n.topic, n.offset));
// @ts-expect-error the protocol is 'json' or 'msgpack'
new HubClient({ url: 'wss://hub.example.com/ws', getToken: async () => 'token', protocol: 'xml' });
`,
    );
    writeFileSync(
      join(scratch, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, lib: ['ES2022', 'DOM'], types: [] },
        files: ['check.ts'],
      }),
    );
    run(process.execPath, [join(CLIENT_DIR, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', scratch], scratch);
  });

  it('loads both IIFE files in Chromium: window.NotificationHub, with and without msgpack', async () => {
    assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM}: apt-get install -y chromium, or set CHROMIUM_PATH`);
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
    try {
      const results: Record<string, { keys: string[]; constructed: string; msgpack: string; size: number }> = {};
      for (const file of ['hub-client.iife.min.js', 'hub-client.json.iife.min.js']) {
        const page = await browser.newPage();
        const errors: string[] = [];
        page.on('pageerror', (e) => errors.push(e.message));
        await page.setContent('<!doctype html><title>iife</title>');
        await page.addScriptTag({ path: join(installed, 'dist', file) });
        results[file] = {
          ...(await page.evaluate(() => {
            const hub = (window as unknown as { NotificationHub: Record<string, any> }).NotificationHub;
            const client = new hub['HubClient']({ url: 'ws://127.0.0.1:1/ws', getToken: async () => 't' });
            let msgpack: string;
            try {
              msgpack = `bytes:${hub['msgpackCodec'].encode({ type: 'pong' }).length}`;
            } catch (err) {
              msgpack = `error:${(err as Error).message}`;
            }
            return { keys: Object.keys(hub), constructed: client.state, msgpack };
          })),
          size: readFileSync(join(installed, 'dist', file)).length,
        };
        assert.deepEqual(errors, [], `${file} threw while loading`);
        await page.close();
      }
      const full = results['hub-client.iife.min.js']!;
      const json = results['hub-client.json.iife.min.js']!;
      for (const r of [full, json]) {
        assert.ok(r.keys.includes('HubClient') && r.keys.includes('CloseCode'), `globals: ${r.keys.join(', ')}`);
        assert.equal(r.constructed, 'disconnected');
      }
      assert.match(full.msgpack, /^bytes:\d+$/);
      assert.match(json.msgpack, /^error:.*needs hub-client\.iife\.min\.js/);
      // the JSON-only build leaves out the msgpack codec (~20 KB minified): the client itself grew
      // with SSE and read state, so compare what is left out, not a ratio
      assert.ok(full.size - json.size > 15_000, `the JSON-only IIFE (${json.size} B) should leave out the msgpack codec of the full one (${full.size} B)`);
    } finally {
      await browser.close();
    }
  });
});
