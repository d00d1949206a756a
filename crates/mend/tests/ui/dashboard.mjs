// The dashboard in a real browser (issue 17): Debian's chromium, driven by playwright-core, against the
// real mend that crates/mend/tests/ui.rs started. Exits 0 when every step held, 1 with the reason
// otherwise. Every wait is on a condition, bounded.
//
// Environment: MEND_URL (the API), MEND_TOKEN (api.token), CHROMIUM (default /usr/bin/chromium),
// MEND_BIN (the mend binary: the script deploys a canary with it), MEND_UI_SCREENSHOTS (a directory:
// screenshots of the main views go there).

import { execFileSync } from 'node:child_process';
import { chromium } from 'playwright-core';

const url = process.env.MEND_URL;
const token = process.env.MEND_TOKEN;
const shots = process.env.MEND_UI_SCREENSHOTS;
const mendBin = process.env.MEND_BIN;
const HOSTILE_LOG = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">';
const HOSTILE_ALERT = '<img src=x onerror="window.__pwned=3"> <b>bold?</b>';

function log(...args) {
  console.log(`[ui ${new Date().toISOString().slice(11, 23)}]`, ...args);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

/** The API, as a script that is not a browser (no Origin: the CLI's way). */
async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(`${url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  check(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

async function replica(service, index) {
  return (await api(`/api/v1/services/${service}`)).replicas[index];
}

/** Waits until the page's row of `key` (`web/0`) shows a ready replica whose pid is not `oldPid`; returns
 * the pid shown. */
async function waitForNewPid(page, key, oldPid, timeout, what) {
  const row = page.locator(`tr[data-replica="${key}"]`);
  try {
    await page.waitForFunction(
      ([key, oldPid]) => {
        const row = document.querySelector(`tr[data-replica="${key}"]`);
        const pid = row && row.querySelector('td.pid').textContent;
        return row && row.dataset.ready === 'true' && /^\d+$/.test(pid) && pid !== String(oldPid);
      },
      [key, oldPid],
      { timeout, polling: 100 },
    );
  } catch (error) {
    throw new Error(`${what}: the page did not show ${key} ready with a pid other than ${oldPid} within ${timeout} ms (row: ${await row.textContent().catch(() => '?')})`);
  }
  return Number(await row.locator('td.pid').textContent());
}

/** `page.waitForFunction`, failing with `what` (and the step's text) when it times out. */
async function until(page, what, fn, arg = null, timeout = 10000) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 100 });
  } catch (error) {
    throw new Error(`${what}: not within ${timeout} ms (${error.message.split('\n')[0]})`);
  }
}

async function screenshot(page, name) {
  if (!shots) return;
  await page.screenshot({ path: `${shots}/dashboard-${name}.png` });
  log(`screenshot ${name}`);
}

async function main() {
  check(url && token && mendBin, 'MEND_URL, MEND_TOKEN and MEND_BIN are needed');
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    // Root in a container: chromium's sandbox needs user namespaces it may not have. The network is
    // closed here: no background connections, updates or sync (each would be refused, noisily).
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-dev-shm-usage',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 760 } });
    const page = await context.newPage();
    // Every console error fails the test, except the answers this test provokes on purpose: the 401
    // that makes the page ask for the token, and the 400 of a malformed query.
    const errors = [];
    let expected = [];
    page.on('console', (message) => {
      if (message.type() !== 'error') return;
      const text = `${message.text()} (${message.location().url || 'page'})`;
      const idx = expected.findIndex((pattern) => pattern.test(text));
      if (idx >= 0) expected.splice(idx, 1);
      else errors.push(text);
    });
    page.on('pageerror', (error) => errors.push(`uncaught: ${error.message}`));
    page.on('dialog', (dialog) => {
      errors.push(`native dialog: ${dialog.message()}`);
      dialog.dismiss();
    });

    // 1. Served by mend: / redirects to /ui/, with the policy.
    const answer = await page.goto(`${url}/`);
    check(answer.ok(), `GET /: ${answer.status()}`);
    check(page.url() === `${url}/ui/`, `redirected to ${page.url()}`);
    const csp = answer.headers()['content-security-policy'] || '';
    check(csp.includes("script-src 'self'") && csp.includes("frame-ancestors 'none'"), `CSP: ${csp}`);
    check(answer.headers()['x-content-type-options'] === 'nosniff', 'nosniff');
    await page.evaluate(() => {
      window.__sameDocument = true;
    });

    // 2. The replicas, as the API has them, live.
    for (const key of ['web/0', 'web/1', 'files/0']) {
      await page.waitForSelector(`tr[data-replica="${key}"][data-ready="true"]`, { timeout: 20000 });
    }
    const web0 = await replica('web', 0);
    check(
      (await page.locator('tr[data-replica="web/0"] td.pid').textContent()) === String(web0.pid),
      'the page shows web/0 with the pid the API has',
    );
    await page.waitForSelector('#live.on', { timeout: 10000 });
    await until(page, 'sparklines', () => document.querySelectorAll('tr.replica svg.spark polyline').length >= 3, null, 30000);
    await screenshot(page, 'overview');
    log('replicas shown');

    // 3. A crash (kill -9 from outside) and the restart, without reloading the page.
    process.kill(web0.pid, 'SIGKILL');
    const crashed = Date.now();
    const newPid0 = await waitForNewPid(page, 'web/0', web0.pid, 15000, 'after kill -9');
    log(`crash and restart shown in ${Date.now() - crashed} ms (pid ${web0.pid} -> ${newPid0})`);
    await until(page, 'one restart of web/0', () => document.querySelector('tr[data-replica="web/0"] td.restarts').textContent === '1');
    await until(page, 'the exit of web/0 among the latest events', () =>
      [...document.querySelectorAll('#latest li.event[data-kind="exited"]')].some(
        (li) => li.textContent.includes('web/0') && li.textContent.includes('SIGKILL'),
      ),
    );

    // 4. A pending action in approve mode, approved from the page, through the token: the first change
    // answers 401 and the page asks for it.
    await api('/api/v1/alerts', {
      method: 'POST',
      body: {
        version: '4',
        status: 'firing',
        alerts: [{ status: 'firing', labels: { alertname: 'Sick', service: 'web', replica: '1' }, annotations: { summary: HOSTILE_ALERT } }],
      },
    });
    const pendingItem = page.locator('#approvals li[data-action]', { hasText: 'restart web/1' });
    try {
      await pendingItem.waitFor({ timeout: 20000 });
    } catch {
      const shown = await page.locator('#approvals').textContent();
      throw new Error(`no pending restart of web/1 shown; the page: ${shown}; the API: ${JSON.stringify(await api('/api/v1/healing'))}`);
    }
    const actionId = await pendingItem.getAttribute('data-action');
    await screenshot(page, 'approval');
    const web1 = await replica('web', 1);
    expected.push(/status of 401/);
    await pendingItem.locator('button.approve').click();
    await page.waitForSelector('#ask[open]', { timeout: 10000 });
    check((await page.locator('#ask-input').getAttribute('type')) === 'password', 'the token is asked as a password');
    await page.fill('#ask-input', token);
    await page.click('#ask-ok');
    const approvedPid = await waitForNewPid(page, 'web/1', web1.pid, 60000, 'after approving');
    await page.waitForSelector(`#approvals li[data-action="${actionId}"]`, { state: 'detached', timeout: 10000 });
    const approved = (await api('/api/v1/actions?limit=100')).actions.find((a) => String(a.id) === actionId);
    check(approved && approved.state !== 'pending', `action ${actionId} approved: ${JSON.stringify(approved)}`);
    const stored = await page.evaluate(() => ({
      session: sessionStorage.getItem('mend.token'),
      local: localStorage.length,
      cookies: document.cookie,
    }));
    check(stored.session === token && stored.local === 0 && stored.cookies === '', `token kept: ${JSON.stringify(stored)}`);
    check(expected.length === 0, 'the 401 was seen');
    log(`approved: pid ${web1.pid} -> ${approvedPid}`);

    // 5. The restart button (the token is not asked again).
    await page.click('tr[data-replica="web/1"] button[title="Restart web/1"]');
    const newPid1 = await waitForNewPid(page, 'web/1', approvedPid, 60000, 'after the restart button');
    check(newPid1 === (await replica('web', 1)).pid, 'the API agrees on the new pid');
    log(`restart button: pid ${approvedPid} -> ${newPid1}`);

    // 5b. Stop and start a replica of a program we did not write (Python's http.server), and scale.
    await page.click('tr[data-replica="files/0"] button[title="Stop files/0"]');
    await until(
      page,
      'files/0 stopped',
      () => {
        const row = document.querySelector('tr[data-replica="files/0"]');
        return row && row.dataset.state === 'stopped' && row.querySelector('td.pid').textContent === '–';
      },
      null,
      30000,
    );
    await page.click('tr[data-replica="files/0"] button[title="Start files/0"]');
    await page.waitForSelector('tr[data-replica="files/0"][data-ready="true"]', { timeout: 30000 });
    await page.click('tbody[data-service="web"] tr.service button:has-text("scale")');
    await page.waitForSelector('#ask[open]', { timeout: 10000 });
    await page.fill('#ask-input', '3');
    await page.click('#ask-ok');
    await page.waitForSelector('tr[data-replica="web/2"][data-ready="true"]', { timeout: 30000 });
    await page.click('tbody[data-service="web"] tr.service button:has-text("scale")');
    await page.waitForSelector('#ask[open]', { timeout: 10000 });
    await page.fill('#ask-input', '2');
    await page.click('#ask-ok');
    await page.waitForSelector('tr[data-replica="web/2"]', { state: 'detached', timeout: 30000 });
    check((await api('/api/v1/services/web')).desired_replicas === 2, 'scaled back to 2');
    log('stop, start and scale');

    // 6. Pause and resume.
    await page.click('#pause');
    await until(page, 'healing paused', () => document.querySelector('#pause')?.textContent === 'Resume healing');
    check((await api('/api/v1/healing')).paused === true, 'the API says paused');
    await page.click('#pause');
    await until(page, 'healing resumed', () => document.querySelector('#pause')?.textContent === 'Pause healing');
    check((await api('/api/v1/healing')).paused === false, 'the API says resumed');

    // 6b. A rollout: `mend deploy` starts a canary; the page shows it (canary against stable, the step,
    // the weight, the verdicts so far) without reloading, and pauses, resumes and aborts it.
    execFileSync(
      mendBin,
      ['deploy', 'shop', '--release', 'v2', '--steps', '10,50,100', '--interval', '10m', '--api', url.replace(/^http:\/\//, '')],
      { env: { ...process.env, MEND_TOKEN: token }, stdio: 'pipe', timeout: 60000 },
    );
    const rolloutBox = page.locator('#rollouts .rollout[data-rollout="shop"]');
    try {
      await page.waitForSelector('#rollouts .rollout[data-rollout="shop"][data-phase="stepping"]', { timeout: 60000 });
    } catch {
      throw new Error(`the rollout is not shown stepping; the page: ${await page.locator('#rollouts').textContent()}; the API: ${JSON.stringify(await api('/api/v1/services/shop/rollout'))}`);
    }
    const shown = await rolloutBox.textContent();
    check(/canary v2 against stable v1/.test(shown) && shown.includes('step 1 of 3') && shown.includes('canary weight now 10%'), `the rollout: ${shown}`);
    check((await rolloutBox.locator('.step-current').textContent()) === '10%', 'the current step is 10%');
    await until(page, "the first step's verdict", () => document.querySelector('#rollouts .rollout[data-rollout="shop"] li[data-verdict="started"]') !== null);
    await rolloutBox.locator('button.pause').click();
    await page.waitForSelector('#rollouts .rollout[data-rollout="shop"][data-paused="true"]', { timeout: 20000 });
    await until(page, 'the pause among the verdicts', () => document.querySelector('#rollouts .rollout[data-rollout="shop"] li[data-verdict="paused"]') !== null);
    check((await api('/api/v1/services/shop/rollout')).rollout.paused === true, 'the API says the rollout is paused');
    check((await rolloutBox.locator('button.resume').count()) === 1, 'a paused rollout offers Resume');
    await screenshot(page, 'rollout');
    await rolloutBox.locator('button.resume').click();
    await page.waitForSelector('#rollouts .rollout[data-rollout="shop"][data-paused="false"]', { timeout: 20000 });
    // Abort asks for the service's name first.
    await rolloutBox.locator('button.abort').click();
    await page.waitForSelector('#ask[open]', { timeout: 10000 });
    await page.fill('#ask-input', 'shop');
    await page.click('#ask-ok');
    await until(
      page,
      'the rollout rolled back',
      () => /^(rolling_back|rolled_back)$/.test(document.querySelector('#rollouts .rollout[data-rollout="shop"]')?.dataset.phase || ''),
      null,
      30000,
    );
    log('rollout shown, paused, resumed and aborted');

    // 7. The incident: diagnosis, evidence (escaped), actions and outcomes.
    await page.click('nav a[data-view="incidents"]');
    const incident = page.locator('#incident-list details').first();
    await incident.waitFor({ timeout: 10000 });
    await incident.locator('summary').click();
    await until(
      page,
      "the alert's summary, as text, in the incident's evidence",
      (text) => [...document.querySelectorAll('#incident-list .reason')].some((e) => e.textContent.includes(text)),
      HOSTILE_ALERT,
    );
    await until(page, "the incident's restart", () =>
      document.querySelector('#incident-list details')?.textContent.includes('restart web/1'),
    );
    const reportHref = await incident.locator('a.report-html').getAttribute('href');
    check(/^\/api\/v1\/incidents\/\d+\/report\?format=html$/.test(reportHref), `the report link: ${reportHref}`);
    const reportPage = await context.request.get(`${url}${reportHref}`);
    check(reportPage.ok() && (await reportPage.text()).includes('>Human decisions</h2>'), 'the linked report is served');
    await screenshot(page, 'incident');

    // 7b. Feedback from the incident view: the false-alarm button posts the verdict (through the token);
    // an external alert has no rule or detector to relax, which the API answers with no change.
    await incident.locator('button.false-positive').click();
    await until(page, 'the feedback is taken', () => /a false alarm: done/.test(document.querySelector('#toast')?.textContent || ''));

    // 8. The timeline has the signal, escaped too.
    await page.click('nav a[data-view="timeline"]');
    await until(
      page,
      'the signal, as text, in the timeline',
      (text) => [...document.querySelectorAll('#timeline-list li.signal')].some((e) => e.textContent.includes(text)),
      HOSTILE_ALERT,
    );
    await screenshot(page, 'timeline');

    // 9. A chart from a PromQL query, and a clear error for a malformed one.
    await page.click('nav a[data-view="graph"]');
    expected.push(/status of 400/);
    await page.fill('#promql', 'rate(mend_replica_cpu_seconds_total[');
    await page.click('#query-form button[type="submit"]');
    await until(page, 'the error of a malformed query', () => !document.querySelector('#query-error').hidden);
    const queryError = await page.locator('#query-error').textContent();
    check(queryError.length > 0, 'a malformed query says why');
    await page.fill('#promql', 'mend_replica_resident_memory_bytes');
    await page.click('#query-form button[type="submit"]');
    await until(
      page,
      'a chart of the query',
      () => document.querySelector('#query-error').hidden && document.querySelectorAll('#chart .u-legend .u-series').length >= 4,
    );
    const legend = await page.locator('#chart .u-legend').textContent();
    check(legend.includes('service="files"') && legend.includes('service="web"'), `legend: ${legend}`);
    check(await page.locator('#chart canvas').count() === 1, 'a canvas');
    // The chart is drawn: the canvas is not blank.
    const inked = await page.evaluate(() => {
      const canvas = document.querySelector('#chart canvas');
      const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      let n = 0;
      for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) n += 1;
      return n;
    });
    check(inked > 500, `the chart drew ${inked} pixels`);
    await screenshot(page, 'graph');
    log(`query error: ${queryError}`);

    // 10. Logs of a replica, following: the hostile line is text.
    await page.click('nav a[data-view="logs"]');
    await page.selectOption('#logs-service', 'web');
    await page.selectOption('#logs-replica', '0');
    await until(page, 'the hostile log line, as text', (text) => document.querySelector('#log-text').textContent.includes(text), HOSTILE_LOG);
    // Following: a crash writes its start line again, and it arrives without asking.
    const before = (await page.locator('#log-text').textContent()).split(HOSTILE_LOG).length;
    process.kill((await replica('web', 0)).pid, 'SIGKILL');
    await until(
      page,
      "the restarted replica's first line, followed",
      ([text, before]) => document.querySelector('#log-text').textContent.split(text).length > before,
      [HOSTILE_LOG, before],
      15000,
    );
    await screenshot(page, 'logs');

    // Nothing hostile ran or became markup, and the page was never reloaded.
    const verdict = await page.evaluate(() => ({
      pwned: window.__pwned,
      sameDocument: window.__sameDocument,
      logElements: document.querySelectorAll('#log-text *').length,
      images: document.querySelectorAll('img').length,
      // A value rendered as a JavaScript object's name instead of its text.
      objects: [...document.querySelectorAll('main section')].map((s) => s.textContent).join('').includes('[object '),
    }));
    check(!verdict.objects, 'the page shows "[object ...]" somewhere');
    check(verdict.pwned === undefined, `hostile text ran: ${verdict.pwned}`);
    check(verdict.logElements === 0 && verdict.images === 0, `hostile text became markup: ${JSON.stringify(verdict)}`);
    check(verdict.sameDocument === true, 'the page was reloaded');
    check(expected.length === 0, `expected console errors not seen: ${expected}`);
    check(errors.length === 0, `console errors:\n${errors.join('\n')}`);
    log('all steps held');
  } finally {
    await browser.close();
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(`dashboard test failed: ${error.message}`);
    process.exit(1);
  },
);
