// The demo page as the hub serves it at /demo/ (embedded backend: demo mode is on by default).
// E2E_SCREENSHOT=<path> also saves a screenshot of the page with a few notifications.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'playwright-core';
import { PageProblems, launchBrowser, preflight, startHub } from './harness.js';
import type { HubProcess } from './harness.js';

const skip = preflight();

describe('demo page served by the hub at /demo/', { skip }, () => {
  let browser: Browser;
  let hub: HubProcess;

  before(async () => {
    [browser, hub] = await Promise.all([launchBrowser(), startHub()]);
  });

  after(async () => {
    await browser?.close();
    await hub?.stop('SIGTERM');
  });

  it('connects, publishes, shows notifications with their latency and the presence', async () => {
    const page = await browser.newPage({ viewport: { width: 1200, height: 820 } });
    const problems = new PageProblems();
    problems.watch(page);
    const res = await page.goto(`${hub.http}/demo/?user=42&connect=1`);
    assert.equal(res?.status(), 200, 'the hub serves the demo page');
    await page.waitForSelector('#state[data-state="connected"]', { timeout: 15_000 });
    const messages = ['Order #1042 has shipped', 'New comment on your post', 'Your report is ready'];
    for (const [i, text] of messages.entries()) {
      await page.fill('#message', text);
      await page.click('#publish');
      await page.waitForFunction((n) => document.querySelectorAll('#feed li').length >= n, i + 1, { timeout: 10_000 });
    }
    const texts = await page.$$eval('#feed li .text', (els) => els.map((e) => e.textContent));
    assert.deepEqual(texts, [...messages].reverse(), 'newest first');
    const latency = await page.textContent('#feed li .latency');
    assert.match(latency ?? '', /^\d+ ms$/);
    await page.waitForFunction(() => /online · 1 connection$/.test(document.getElementById('presence')!.textContent ?? ''), undefined, { timeout: 10_000 });
    assert.equal(await page.textContent('#count'), '3');
    problems.assertClean(); // no page error, no console error
    const shot = process.env['E2E_SCREENSHOT'];
    if (shot) {
      // Let the arrival highlight fade so the picture shows the resting state.
      await page.waitForFunction(() => document.getAnimations().every((a) => a.playState !== 'running'), undefined, { timeout: 5000 });
      await page.screenshot({ path: shot, fullPage: true });
    }
  });

  it('two pages of one user: marking read in one updates the badge and the list in the other', async () => {
    const user = `reader${Date.now() % 100000}`;
    const open = async () => {
      const page = await browser.newPage({ viewport: { width: 1200, height: 820 } });
      const problems = new PageProblems();
      problems.watch(page);
      await page.goto(`${hub.http}/demo/?user=${user}&connect=1`);
      await page.waitForSelector('#state[data-state="connected"]', { timeout: 15_000 });
      return { page, problems };
    };
    const laptop = await open();
    const phone = await open();
    const messages = ['Invoice #77 is due', 'Anna mentioned you', 'Build 1.4.2 passed'];
    for (const [i, text] of messages.entries()) {
      await laptop.page.fill('#message', text);
      await laptop.page.click('#publish');
      for (const { page } of [laptop, phone]) {
        await page.waitForFunction((n) => document.querySelectorAll('#feed li').length >= n, i + 1, { timeout: 10_000 });
      }
    }
    const badge = (page: typeof laptop.page, n: number) =>
      page.waitForFunction((want) => document.getElementById('unread')!.textContent === String(want), n, { timeout: 10_000 });
    await badge(phone.page, 3);
    await badge(laptop.page, 3);
    // Read the middle one on the laptop: the phone's badge drops to 2 and its item turns read.
    await laptop.page.click('#feed li:nth-child(2) .mark');
    await badge(phone.page, 2);
    const phoneClasses = await phone.page.$$eval('#feed li', (els) => els.map((e) => e.className));
    assert.deepEqual(phoneClasses, ['unread', 'read', 'unread'], 'newest first; the middle one read');
    await badge(laptop.page, 2);
    // "Mark all read" on the phone clears the laptop's badge.
    await phone.page.click('#mark-all');
    await badge(laptop.page, 0);
    const laptopClasses = await laptop.page.$$eval('#feed li', (els) => els.map((e) => e.className));
    assert.deepEqual(laptopClasses, ['read', 'read', 'read']);
    // One more arrives: unread again on both.
    await laptop.page.fill('#message', 'Your ride is here');
    await laptop.page.click('#publish');
    await badge(phone.page, 1);
    await badge(laptop.page, 1);
    laptop.problems.assertClean();
    phone.problems.assertClean();
    const shot = process.env['E2E_READS_SCREENSHOT'];
    if (shot) {
      await phone.page.waitForFunction(() => document.getAnimations().every((a) => a.playState !== 'running'), undefined, { timeout: 5000 });
      await phone.page.screenshot({ path: shot, fullPage: true });
    }
  });
});
