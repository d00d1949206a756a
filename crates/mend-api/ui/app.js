// The dashboard: is everything healthy, what broke, what did mend do about it and why.
//
// The API is the truth: every view reads the same endpoints as the CLI. The stream (`/api/v1/stream`,
// server-sent events) says when something changed, so the views read again at once instead of waiting for
// the next poll; while the stream is down, the page polls. Nothing is ever reloaded whole.

import { ApiError, get, onTokenNeeded, post, queryRange } from './api.js';
import { axisValue, badge, bytes, duration, fill, h, sparkline, time } from './dom.js';

const $ = (id) => document.getElementById(id);

const state = {
  view: 'overview',
  services: [],
  healing: null,
  incidents: [],
  openIncidents: new Set(),
  timeline: [],
  eventsAfter: 0,
  signalsAfter: 0,
  timelineLoaded: false,
  sparks: new Map(),
  rollouts: [],
  busy: new Set(),
  live: false,
};

/* ---------- asking and telling ---------- */

/** Shows the dialog with `text` and an input; resolves with the value, or null when cancelled. */
function ask(text, { value = '', type = 'text' } = {}) {
  const dialog = $('ask');
  const input = $('ask-input');
  $('ask-text').textContent = text;
  input.type = type;
  input.value = value;
  dialog.returnValue = '';
  dialog.showModal();
  input.focus();
  return new Promise((resolve) => {
    dialog.addEventListener(
      'close',
      () => resolve(dialog.returnValue === 'ok' && input.value.trim() !== '' ? input.value.trim() : null),
      { once: true },
    );
  });
}

onTokenNeeded((why) => ask(why, { type: 'password' }));

let toastTimer = 0;
function toast(text, failed = false) {
  const element = $('toast');
  element.textContent = text;
  element.className = failed ? 'toast failed' : 'toast';
  element.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    element.hidden = true;
  }, failed ? 8000 : 4000);
}

/** Runs a change (`what` for people), keeping its button disabled meanwhile; reads the state after. */
async function act(what, key, change) {
  if (state.busy.has(key)) return;
  state.busy.add(key);
  renderServices();
  toast(`${what}…`);
  try {
    await change();
    toast(`${what}: done`);
  } catch (error) {
    toast(`${what}: ${error.message}`, true);
  } finally {
    state.busy.delete(key);
    refreshSoon('services', 'healing', 'incidents', 'timeline', 'rollouts');
  }
}

/* ---------- services ---------- */

function serviceUrl(name, path = '') {
  return `/api/v1/services/${encodeURIComponent(name)}${path}`;
}

function control(service, action, replica) {
  const query = new URLSearchParams({ reason: 'from the dashboard' });
  if (replica !== undefined) query.set('replica', String(replica));
  const target = replica === undefined ? service : `${service}/${replica}`;
  return act(`${action} ${target}`, `${action}:${target}`, () =>
    post(`${serviceUrl(service, `/${action}`)}?${query}`),
  );
}

async function scale(service) {
  const current = state.services.find((s) => s.name === service);
  const given = await ask(`How many replicas of ${service}?`, {
    value: String(current ? current.desired_replicas : 1),
    type: 'number',
  });
  if (given === null) return;
  const replicas = Number(given);
  if (!Number.isInteger(replicas) || replicas < 0) {
    toast(`not a number of replicas: ${given}`, true);
    return;
  }
  await act(`scale ${service} to ${replicas}`, `scale:${service}`, () =>
    post(`${serviceUrl(service, '/scale')}?reason=from+the+dashboard`, { replicas }),
  );
}

function button(text, key, onclick, title) {
  return h('button', { type: 'button', class: 'small', disabled: state.busy.has(key), onclick, title }, text);
}

function stateBadge(replica) {
  if (replica.ready) return badge('ready', 'ready');
  if (replica.failed) return badge(replica.state, 'failed');
  if (replica.state === 'running') return badge(replica.not_ready || 'not ready', 'unready');
  return badge(replica.state, replica.state);
}

function replicaRow(service, replica) {
  const key = `${service.name}/${replica.index}`;
  const spark = state.sparks.get(key) || {};
  const uptime = replica.started_at && replica.pid ? (Date.now() - Date.parse(replica.started_at)) / 1000 : NaN;
  const down = !replica.pid;
  return h(
    'tr',
    { class: 'replica', 'data-replica': key, 'data-state': replica.state, 'data-ready': String(replica.ready) },
    h('td', {}, `${service.name}/${replica.index}`, replica.release !== 'stable' ? [' ', badge(replica.release)] : []),
    h('td', { class: 'state' }, stateBadge(replica), replica.ejected ? [' ', badge('ejected', 'failed')] : []),
    h('td', { class: 'pid' }, replica.pid ?? '–'),
    h('td', { class: 'port' }, replica.port ?? ''),
    h('td', { class: 'restarts' }, String(replica.restarts)),
    h('td', { class: 'uptime' }, duration(uptime)),
    h('td', { class: 'cpu' }, replica.cpu_percent != null ? `${replica.cpu_percent.toFixed(1)}%` : '', sparkline(spark.cpu || [])),
    h('td', { class: 'memory' }, replica.rss_bytes != null ? bytes(replica.rss_bytes) : '', sparkline(spark.memory || [])),
    h('td', { class: 'exit', title: replica.last_exit || '' }, replica.last_exit || ''),
    h(
      'td',
      { class: 'buttons' },
      button('restart', `restart:${key}`, () => control(service.name, 'restart', replica.index), `Restart ${key}`),
      down
        ? button('start', `start:${key}`, () => control(service.name, 'start', replica.index), `Start ${key}`)
        : button('stop', `stop:${key}`, () => control(service.name, 'stop', replica.index), `Stop ${key}`),
    ),
  );
}

function serviceRows(service) {
  const healthy = service.ready_replicas === service.desired_replicas;
  const head = h(
    'tr',
    { class: 'service', 'data-service': service.name },
    h(
      'th',
      { colspan: 9 },
      h('span', { class: healthy ? 'dot ok' : 'dot bad' }),
      ' ',
      service.name,
      ' ',
      h('span', { class: 'muted' }, `${service.ready_replicas}/${service.desired_replicas} ready`),
      service.canary_weight != null ? [' ', badge(`canary ${service.canary_weight}%`, 'canary')] : [],
      service.chaos.map((fault) => [' ', badge(`chaos: ${fault.description}`, 'failed')]),
    ),
    h(
      'td',
      { class: 'buttons' },
      button('restart all', `restart:${service.name}`, () => control(service.name, 'restart'), 'One replica at a time'),
      button('scale…', `scale:${service.name}`, () => scale(service.name)),
    ),
  );
  return h('tbody', { 'data-service': service.name }, head, service.replicas.map((r) => replicaRow(service, r)));
}

function renderServices() {
  const table = $('services');
  for (const body of [...table.tBodies]) body.remove();
  for (const service of state.services) table.append(serviceRows(service));
  renderSummary();
}

async function loadServices() {
  const answer = await get('/api/v1/services');
  state.services = answer.services;
  renderServices();
  fillServiceSelects();
}

/** CPU and memory of every replica over the last ten minutes, for the sparklines. */
async function loadSparks() {
  const end = Date.now() / 1000;
  const start = end - 600;
  const [cpu, memory] = await Promise.all([
    queryRange('mend_replica_cpu_percent', start, end, 10),
    queryRange('mend_replica_resident_memory_bytes', start, end, 10),
  ]);
  const sparks = new Map();
  const add = (data, field) => {
    for (const series of data.result || []) {
      const key = `${series.metric.service}/${series.metric.replica}`;
      const entry = sparks.get(key) || {};
      entry[field] = series.values.map(([, v]) => Number(v));
      sparks.set(key, entry);
    }
  };
  add(cpu, 'cpu');
  add(memory, 'memory');
  state.sparks = sparks;
  renderServices();
}

/* ---------- healing ---------- */

function describeAction(record) {
  const kind = record.action.kind.replace(/_/g, ' ');
  const extra = record.action.delta !== undefined ? ` ${record.action.delta > 0 ? '+' : ''}${record.action.delta}` : '';
  const name = record.action.name ? ` ${record.action.name}` : '';
  const target = record.service ? ` ${record.service}${record.replica != null ? `/${record.replica}` : ''}` : '';
  return `${kind}${extra}${name}${target}`;
}

function actor(record) {
  if (record.actor.by === 'autoscaler') return 'the autoscaler';
  return record.actor.by === 'operator' ? 'an operator' : `policy “${record.actor.when}”`;
}

function feedback(incident, verdict) {
  const what = verdict === 'false_positive' ? 'a false alarm' : 'correct';
  return act(`mark incident ${incident.id} ${what}`, `feedback:${incident.id}`, () =>
    post(`/api/v1/incidents/${incident.id}/feedback`, { verdict }),
  );
}

function decide(record, decision) {
  return act(`${decision} action ${record.id}`, `${decision}:${record.id}`, () =>
    post(`/api/v1/actions/${record.id}/${decision}`),
  );
}

function renderSummary() {
  const n = state.services.length;
  const replicas = state.services.flatMap((s) => s.replicas);
  const ready = replicas.filter((r) => r.ready).length;
  const desired = state.services.reduce((sum, s) => sum + s.desired_replicas, 0);
  const healing = state.healing;
  const healthy = ready === desired && (!healing || healing.open_incidents === 0);
  const parts = [
    h('span', { class: healthy ? 'verdict ok' : 'verdict bad' }, healthy ? 'All healthy' : 'Needs attention'),
    h('span', {}, `${n} service${n === 1 ? '' : 's'}, ${ready}/${desired} replicas ready`),
  ];
  if (healing) {
    parts.push(
      h('span', {}, `${healing.open_incidents} open incident${healing.open_incidents === 1 ? '' : 's'}`),
      h('span', {}, 'healing: ', badge(healing.paused ? 'paused' : healing.mode, healing.paused ? 'failed' : 'ready')),
      h(
        'button',
        {
          type: 'button',
          id: 'pause',
          disabled: state.busy.has('pause'),
          onclick: () =>
            act(healing.paused ? 'resume healing' : 'pause healing', 'pause', () =>
              post(`/api/v1/healing/${healing.paused ? 'resume' : 'pause'}`),
            ),
        },
        healing.paused ? 'Resume healing' : 'Pause healing',
      ),
    );
  }
  fill($('summary'), parts);
}

function renderApprovals() {
  const pending = state.healing ? state.healing.pending : [];
  if (pending.length === 0) {
    fill($('approvals'));
    return;
  }
  fill(
    $('approvals'),
    h('h2', {}, 'Waiting for approval'),
    h(
      'ul',
      { class: 'approvals' },
      pending.map((record) =>
        h(
          'li',
          { 'data-action': record.id },
          h('strong', {}, describeAction(record)),
          ' asked by ',
          actor(record),
          ' ',
          time(record.requested_at),
          h('div', { class: 'reason' }, record.reason),
          h(
            'div',
            {},
            h('button', { type: 'button', class: 'approve', disabled: state.busy.has(`approve:${record.id}`), onclick: () => decide(record, 'approve') }, 'Approve'),
            ' ',
            h('button', { type: 'button', class: 'deny', disabled: state.busy.has(`deny:${record.id}`), onclick: () => decide(record, 'deny') }, 'Deny'),
          ),
        ),
      ),
    ),
  );
}

async function loadHealing() {
  state.healing = await get('/api/v1/healing');
  renderSummary();
  renderApprovals();
}

/* ---------- rollouts ---------- */

const ROLLOUT_DONE = new Set(['promoted', 'rolled_back']);

/** A rollout's times are milliseconds since the epoch (the store's form): as RFC 3339. */
function iso(ms) {
  return new Date(Number(ms)).toISOString();
}

/** What a rollout event says of its step: the verdict that moved it, or why it held. */
function verdictOf(event) {
  const phase = event.details && event.details.phase;
  const text = event.message;
  if (phase === 'rolling_back' || phase === 'rolled_back') return /aborted by an operator/.test(text) ? 'aborted' : 'failed';
  if (phase === 'promoting' || phase === 'promoted') return 'promoted';
  if (/ gets \d+%: /.test(text)) return /canary is ready|ready: /.test(text) ? 'started' : 'passed';
  if (/paused by an operator/.test(text)) return 'paused';
  if (/rollout of .* started/.test(text)) return 'deployed';
  if (/fewer than|too little|inconclusive/i.test(text)) return 'inconclusive';
  return 'held';
}

function order(service, verb, rollout) {
  return act(`${verb} the rollout of ${rollout.canary} to ${service}`, `rollout:${service}`, () =>
    post(serviceUrl(service, `/rollout/${verb}`)),
  );
}

/** Abort and promote change what serves: the person types the service's name to confirm. */
async function confirmOrder(service, verb, rollout) {
  const what = verb === 'abort' ? `roll ${rollout.canary} back now` : `make ${rollout.canary} stable now, without further judging`;
  const given = await ask(`${verb === 'abort' ? 'Abort' : 'Promote'}: ${what}? Type ${service} to confirm.`);
  if (given === null) return;
  if (given !== service) {
    toast(`not confirmed: ${given} is not ${service}`, true);
    return;
  }
  await order(service, verb, rollout);
}

function rolloutItem({ service, status, events }) {
  const rollout = status.rollout;
  const done = ROLLOUT_DONE.has(rollout.phase);
  const key = `rollout:${service}`;
  const stepping = rollout.phase === 'stepping';
  const steps = rollout.steps.map((weight, idx) => {
    const where = done || idx < rollout.step_idx ? 'done' : idx === rollout.step_idx && stepping ? 'current' : 'next';
    return h('li', { class: `step step-${where}`, title: `step ${idx + 1}: ${weight}%` }, `${weight}%`);
  });
  const bakeEnds = Number(rollout.since) + rollout.interval_ms;
  return h(
    'div',
    { class: `rollout${done ? ' done' : ''}`, 'data-rollout': service, 'data-phase': rollout.phase, 'data-paused': String(rollout.paused) },
    h(
      'div',
      { class: 'rollout-head' },
      h('strong', {}, service),
      ': canary ',
      badge(rollout.canary, 'canary'),
      ' against stable ',
      badge(rollout.stable, 'kind'),
      ' ',
      badge(rollout.phase.replace(/_/g, ' '), rollout.phase),
      rollout.paused ? [' ', badge('paused', 'failed')] : [],
    ),
    h(
      'p',
      { class: 'rollout-step' },
      stepping ? `step ${rollout.step_idx + 1} of ${rollout.steps.length}` : rollout.phase.replace(/_/g, ' '),
      `, canary weight now ${status.weight}%`,
      stepping && !rollout.paused ? [', judged ', time(iso(bakeEnds))] : [],
      rollout.inconclusive ? `, ${rollout.inconclusive} inconclusive window${rollout.inconclusive === 1 ? '' : 's'} in a row` : '',
      ', started ',
      time(iso(rollout.started_at)),
    ),
    h('ol', { class: 'steps' }, steps),
    rollout.reason ? h('div', { class: 'reason' }, rollout.reason) : [],
    done
      ? []
      : h(
          'p',
          { class: 'rollout-buttons' },
          rollout.paused
            ? h('button', { type: 'button', class: 'resume', disabled: state.busy.has(key), onclick: () => order(service, 'resume', rollout) }, 'Resume')
            : h('button', { type: 'button', class: 'pause', disabled: state.busy.has(key), onclick: () => order(service, 'pause', rollout) }, 'Pause'),
          ' ',
          h('button', { type: 'button', class: 'promote', disabled: state.busy.has(key), onclick: () => confirmOrder(service, 'promote', rollout) }, 'Promote'),
          ' ',
          h('button', { type: 'button', class: 'abort', disabled: state.busy.has(key), onclick: () => confirmOrder(service, 'abort', rollout) }, 'Abort'),
        ),
    events.length
      ? h(
          'ol',
          { class: 'timeline verdicts' },
          events
            .slice()
            .reverse()
            .map((event) => {
              const verdict = verdictOf(event);
              const weight = event.details && event.details.weight;
              return h(
                'li',
                { class: 'verdict-item', 'data-verdict': verdict },
                time(event.at),
                ' ',
                badge(verdict, verdict),
                weight !== undefined ? ` at ${weight}% ` : ' ',
                h('span', { class: 'message' }, event.message),
              );
            }),
        )
      : [],
  );
}

function renderRollouts() {
  const shown = state.rollouts;
  if (shown.length === 0) {
    fill($('rollouts'));
    return;
  }
  fill($('rollouts'), h('h2', {}, 'Rollouts'), shown.map(rolloutItem));
}

async function loadRollouts() {
  const found = await Promise.all(
    state.services.map(async (service) => {
      const status = await get(serviceUrl(service.name, '/rollout')).catch(() => null);
      if (!status || !status.rollout) return null;
      // Its verdicts: the rollout's events since it started (each step's, with the figures).
      const query = new URLSearchParams({ service: service.name, kind: 'rollout', since: iso(status.rollout.started_at), limit: '200' });
      const events = await get(`/api/v1/events?${query}`).then((answer) => answer.events, () => []);
      return { service: service.name, status, events };
    }),
  );
  // A finished rollout stays shown for an hour after its last step, then only the API has it.
  const recent = Date.now() - 3600 * 1000;
  state.rollouts = found.filter(
    (entry) => entry && (!ROLLOUT_DONE.has(entry.status.rollout.phase) || Number(entry.status.rollout.since) > recent),
  );
  renderRollouts();
}

/* ---------- incidents ---------- */

function reportUrl(incident, format) {
  return `/api/v1/incidents/${encodeURIComponent(String(incident.id))}/report?format=${format}`;
}

function incidentDetail(incident) {
  const d = incident.diagnosis;
  const causes = [];
  if (d.root) causes.push(h('li', {}, h('strong', {}, d.root), ' — the cause'));
  for (const victim of d.victims || []) causes.push(h('li', {}, victim, ' — suffers because of ', d.root || 'the cause'));
  return [
    h('h4', {}, 'Diagnosis'),
    h('p', {}, h('strong', {}, d.name || 'undiagnosed'), d.evidence ? ': ' : '', d.evidence || ''),
    causes.length ? [h('h4', {}, 'Causes, ranked'), h('ol', {}, causes)] : [],
    h('h4', {}, 'Evidence'),
    h(
      'ul',
      {},
      incident.signals.map((s) =>
        h(
          'li',
          {},
          badge(s.firing ? 'firing' : 'resolved', s.firing ? 'failed' : 'ready'),
          ' ',
          h('strong', {}, s.name),
          ` (${s.kind}${s.service ? `, ${s.service}${s.replica != null ? `/${s.replica}` : ''}` : ''}) since `,
          time(s.since),
          h('div', { class: 'reason' }, s.evidence),
        ),
      ),
    ),
    h('h4', {}, 'Actions'),
    incident.action_records.length === 0
      ? h('p', { class: 'muted' }, 'none')
      : h(
          'ol',
          {},
          incident.action_records.map((a) =>
            h(
              'li',
              { 'data-action': a.id },
              h('strong', {}, describeAction(a)),
              ' ',
              badge(a.state),
              ' by ',
              actor(a),
              ', ',
              time(a.requested_at),
              h('div', { class: 'reason' }, 'why: ', a.reason),
              a.outcome ? h('div', { class: 'reason' }, 'outcome: ', a.outcome) : [],
              a.output ? h('pre', { class: 'output' }, a.output) : [],
            ),
          ),
        ),
    h('h4', {}, 'Timeline'),
    h('ol', { class: 'timeline' }, incident.timeline.map((t) => h('li', {}, time(t.at), ' ', badge(t.state), ' ', t.note))),
    h('h4', {}, 'Report'),
    h(
      'p',
      { class: 'report-links' },
      'Post-incident report: ',
      h('a', { class: 'report-html', href: reportUrl(incident, 'html'), target: '_blank', rel: 'noopener' }, 'HTML, with charts'),
      ' · ',
      h('a', { class: 'report-md', href: reportUrl(incident, 'md'), target: '_blank', rel: 'noopener' }, 'Markdown'),
    ),
    h('h4', {}, 'Feedback'),
    h(
      'p',
      { class: 'feedback' },
      h('button', { type: 'button', class: 'false-positive', disabled: state.busy.has(`feedback:${incident.id}`), onclick: () => feedback(incident, 'false_positive') }, 'False alarm'),
      ' ',
      h('button', { type: 'button', class: 'correct', disabled: state.busy.has(`feedback:${incident.id}`), onclick: () => feedback(incident, 'correct') }, 'Correct'),
      h('span', { class: 'muted' }, ' — a false alarm relaxes the rules and detectors that raised it (mend learn)'),
    ),
  ];
}

function incidentItem(incident) {
  const details = h(
    'details',
    {
      'data-incident': incident.id,
      open: state.openIncidents.has(incident.id),
      ontoggle: (event) => {
        if (event.target.open) state.openIncidents.add(incident.id);
        else state.openIncidents.delete(incident.id);
      },
    },
    h(
      'summary',
      {},
      badge(incident.state),
      ` #${incident.id} `,
      h('strong', {}, incident.diagnosis.name || 'incident'),
      ` on ${[...incident.services].join(', ') || 'mend'}, opened `,
      time(incident.opened_at),
      incident.action_records.length ? ` — ${incident.action_records.map(describeAction).join(', ')}` : '',
    ),
    incidentDetail(incident),
  );
  return h('li', {}, details);
}

function renderIncidents() {
  fill($('incident-list'), state.incidents.length ? state.incidents.map(incidentItem) : h('li', { class: 'muted' }, 'No incidents.'));
  const open = state.incidents.filter((i) => i.state !== 'resolved' && i.state !== 'escalated');
  fill(
    $('open-incidents'),
    open.length
      ? open.map((i) =>
          h(
            'li',
            {},
            h('a', { href: '#incidents', onclick: () => state.openIncidents.add(i.id) }, `#${i.id} ${i.diagnosis.name || 'incident'}`),
            ' ',
            badge(i.state),
            h('div', { class: 'reason' }, i.diagnosis.evidence || ''),
          ),
        )
      : h('li', { class: 'muted' }, 'None.'),
  );
}

async function loadIncidents() {
  state.incidents = (await get('/api/v1/incidents?limit=50')).incidents;
  renderIncidents();
}

/* ---------- timeline ---------- */

const MAX_TIMELINE = 2000;

function timelineItem(entry) {
  const where = entry.service ? `${entry.service}${entry.replica != null ? `/${entry.replica}` : ''}` : 'mend';
  if (entry.type === 'event') {
    return h(
      'li',
      { class: 'event', 'data-kind': entry.kind },
      time(entry.at),
      ' ',
      h('span', { class: 'where' }, where),
      ' ',
      badge(entry.kind, 'kind'),
      ' ',
      h('span', { class: 'message' }, entry.message),
    );
  }
  return h(
    'li',
    { class: 'signal', 'data-kind': entry.kind },
    time(entry.at),
    ' ',
    h('span', { class: 'where' }, where),
    ' ',
    badge(`${entry.name} ${entry.state}`, entry.state === 'firing' ? 'failed' : 'ready'),
    ' ',
    h('span', { class: 'message' }, entry.evidence),
  );
}

function renderTimeline() {
  const service = $('timeline-service').value;
  const what = $('timeline-what').value;
  const shown = state.timeline
    .filter((e) => (!service || e.service === service) && (!what || e.type === what))
    .slice(-500)
    .reverse();
  fill($('timeline-list'), shown.map(timelineItem));
  fill($('latest'), state.timeline.slice(-8).reverse().map(timelineItem));
}

async function loadTimeline() {
  const first = !state.timelineLoaded;
  const eventsQuery = first ? 'limit=300&since=24h' : `after=${state.eventsAfter}&limit=1000`;
  const signalsQuery = first ? 'limit=300&since=24h' : `after=${state.signalsAfter}&limit=1000`;
  const [events, signals] = await Promise.all([
    get(`/api/v1/events?${eventsQuery}`),
    get(`/api/v1/signals?${signalsQuery}`),
  ]);
  state.eventsAfter = Math.max(state.eventsAfter, events.next_after || 0);
  state.signalsAfter = Math.max(state.signalsAfter, signals.next_after || 0);
  state.timelineLoaded = true;
  const fresh = [
    ...events.events.map((e) => ({ ...e, type: 'event', order: Date.parse(e.at) })),
    ...signals.signals.map((s) => ({ ...s, type: 'signal', order: Date.parse(s.at) })),
  ];
  if (fresh.length === 0 && !first) return;
  state.timeline = state.timeline.concat(fresh).sort((a, b) => a.order - b.order).slice(-MAX_TIMELINE);
  renderTimeline();
}

function fillServiceSelects() {
  const names = state.services.map((s) => s.name);
  for (const id of ['timeline-service', 'logs-service']) {
    const select = $(id);
    const have = [...select.options].map((o) => o.value).filter(Boolean);
    if (have.join() === names.join()) continue;
    const value = select.value;
    fill(select, id === 'timeline-service' ? h('option', { value: '' }, 'all') : [], names.map((n) => h('option', { value: n }, n)));
    if (names.includes(value)) select.value = value;
  }
  fillReplicaSelect();
}

/* ---------- graph ---------- */

let chart = null;

function seriesLabel(metric) {
  const { __name__: name = '', ...labels } = metric;
  const inner = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .join(', ');
  return inner ? `${name}{${inner}}` : name || '{}';
}

async function runQuery() {
  const query = $('promql').value.trim();
  const error = $('query-error');
  error.hidden = true;
  if (!query) return;
  history.replaceState(null, '', `#graph?${new URLSearchParams({ q: query, range: $('range').value })}`);
  const range = Number($('range').value);
  const end = Date.now() / 1000;
  const start = end - range;
  const step = Math.max(1, Math.round(range / 300));
  let data;
  try {
    data = await queryRange(query, start, end, step);
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
    return;
  }
  const result = data.result || [];
  const stamps = [...new Set(result.flatMap((s) => s.values.map(([t]) => t)))].sort((a, b) => a - b);
  const index = new Map(stamps.map((t, i) => [t, i]));
  const columns = result.map((s) => {
    const column = new Array(stamps.length).fill(null);
    for (const [t, v] of s.values) column[index.get(t)] = Number(v);
    return column;
  });
  $('query-note').textContent = `${result.length} series, ${stamps.length} steps of ${step}s. Drag across the chart to zoom in, double-click to zoom out.`;
  // The unit of the first series' metric names the axis' unit (a query mixing units gets plain numbers).
  const names = new Set(result.map((s) => s.metric.__name__ || ''));
  const unitName = names.size === 1 ? [...names][0] : '';
  const palette = ['#2f6f4f', '#c0392b', '#2e5f9e', '#b7791f', '#7b4ea3', '#1f8a8a', '#a33b6b', '#5d6d2f'];
  const target = $('chart');
  if (chart) chart.destroy();
  target.replaceChildren();
  chart = new window.uPlot(
    {
      width: Math.max(320, target.clientWidth || 800),
      height: 360,
      cursor: { drag: { x: true, y: false } },
      scales: { x: { time: true } },
      series: [{}, ...result.map((s, i) => ({ label: seriesLabel(s.metric), stroke: palette[i % palette.length], width: 1.5, spanGaps: false }))],
      axes: [{}, { size: 80, values: (u, splits) => splits.map((v) => axisValue(unitName, v)) }],
    },
    [stamps, ...columns],
    target,
  );
}

/* ---------- logs ---------- */

const MAX_LOG_CHARS = 512 * 1024;
let logFollow = null;

function fillReplicaSelect() {
  const service = state.services.find((s) => s.name === $('logs-service').value);
  const select = $('logs-replica');
  const wanted = service ? service.replicas.map((r) => String(r.index)) : [];
  const have = [...select.options].map((o) => o.value).filter(Boolean);
  if (have.join() === wanted.join()) return;
  const value = select.value;
  fill(select, h('option', { value: '' }, 'all'), wanted.map((i) => h('option', { value: i }, i)));
  if (wanted.includes(value)) select.value = value;
}

function stopLogs() {
  if (logFollow) logFollow.abort();
  logFollow = null;
}

async function startLogs() {
  stopLogs();
  const service = $('logs-service').value;
  const pre = $('log-text');
  pre.textContent = '';
  if (!service) return;
  const query = new URLSearchParams({ tail: '200' });
  if ($('logs-replica').value) query.set('replica', $('logs-replica').value);
  if ($('logs-follow').checked) query.set('follow', 'true');
  const controller = new AbortController();
  logFollow = controller;
  try {
    const response = await fetch(`${serviceUrl(service, '/logs')}?${query}`, { signal: controller.signal });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      pre.textContent = `[${body.error || response.statusText}]`;
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
      // Text, never markup: a line holding `<script>` shows as written.
      pre.append(document.createTextNode(decoder.decode(value, { stream: true })));
      if (pre.textContent.length > MAX_LOG_CHARS) pre.textContent = pre.textContent.slice(-MAX_LOG_CHARS / 2);
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    }
  } catch (error) {
    if (error.name !== 'AbortError') pre.append(document.createTextNode(`\n[log stream ended: ${error.message}]\n`));
  }
}

/* ---------- refreshing ---------- */

const loaders = {
  services: loadServices,
  sparks: loadSparks,
  healing: loadHealing,
  incidents: loadIncidents,
  timeline: loadTimeline,
  rollouts: loadRollouts,
};
const pending = new Set();
let refreshTimer = 0;

/** Reads the named parts again, once, shortly (changes come in bursts). */
function refreshSoon(...parts) {
  for (const part of parts) pending.add(part);
  if (!refreshTimer) refreshTimer = setTimeout(flushRefresh, 100);
}

async function flushRefresh() {
  refreshTimer = 0;
  const parts = [...pending];
  pending.clear();
  await Promise.all(
    parts.map((part) =>
      loaders[part]().catch((error) => {
        if (!(error instanceof ApiError) || error.status >= 500) console.warn(`cannot read ${part}: ${error.message}`);
      }),
    ),
  );
}

function setLive(live, text) {
  state.live = live;
  const element = $('live');
  element.textContent = text;
  element.className = live ? 'live on' : 'live off';
}

function follow() {
  const source = new EventSource('/api/v1/stream');
  source.addEventListener('open', () => {
    setLive(true, 'live');
    // Whatever happened while the stream was down.
    refreshSoon('services', 'healing', 'incidents', 'timeline', 'rollouts');
  });
  source.addEventListener('error', () => {
    setLive(false, 'reconnecting (polling)');
    // The browser retries by itself after a dropped connection, but not after a refusal (mend serves
    // a few streams at once and answers 503 past that): try again later, polling meanwhile.
    if (source.readyState === EventSource.CLOSED) setTimeout(follow, 30000);
  });
  source.addEventListener('replica', (message) => {
    const change = JSON.parse(message.data);
    const row = document.querySelector(`tr[data-replica="${CSS.escape(`${change.replica.service}/${change.replica.index}`)}"]`);
    if (row) row.dataset.state = change.condition;
    refreshSoon('services');
  });
  source.addEventListener('event', (message) => {
    refreshSoon('services', 'timeline', 'healing', 'incidents');
    if (/"kind":"(rollout|canary_weight_changed)"/.test(message.data) || state.rollouts.length) refreshSoon('rollouts');
  });
  source.addEventListener('signal', () => refreshSoon('timeline', 'healing', 'incidents'));
  source.addEventListener('resync', () => refreshSoon('services', 'healing', 'incidents', 'timeline', 'rollouts'));
}

function poll() {
  // CPU, memory and uptime change every second without a message; while the stream is down, so may
  // anything else.
  // A rollout in progress changes with time too (its bake time runs out).
  const rolling = state.rollouts.some((entry) => !ROLLOUT_DONE.has(entry.status.rollout.phase));
  refreshSoon('services', 'healing', ...(state.live ? [] : ['incidents', 'timeline', 'rollouts']), ...(rolling ? ['rollouts'] : []));
}

/* ---------- views ---------- */

function showView() {
  const [name, query] = (location.hash.slice(1) || 'overview').split('?');
  const view = $(`view-${name}`) ? name : 'overview';
  for (const section of document.querySelectorAll('.view')) section.hidden = section.id !== `view-${view}`;
  for (const link of document.querySelectorAll('nav a')) link.classList.toggle('current', link.dataset.view === view);
  if (view !== 'logs') stopLogs();
  if (view === 'logs' && !logFollow) startLogs();
  if (view === 'graph' && query) {
    const params = new URLSearchParams(query);
    if (params.get('q') && params.get('q') !== $('promql').value) {
      $('promql').value = params.get('q');
      if (params.get('range')) $('range').value = params.get('range');
      runQuery();
    }
  }
  if (view === 'incidents') renderIncidents();
  state.view = view;
}

function start() {
  window.addEventListener('hashchange', showView);
  $('query-form').addEventListener('submit', (event) => {
    event.preventDefault();
    runQuery();
  });
  $('timeline-filter').addEventListener('change', renderTimeline);
  $('logs-form').addEventListener('submit', (event) => event.preventDefault());
  $('logs-service').addEventListener('change', () => {
    fillReplicaSelect();
    startLogs();
  });
  $('logs-replica').addEventListener('change', startLogs);
  $('logs-follow').addEventListener('change', startLogs);
  $('ask').addEventListener('close', () => $('ask-input').blur());
  refreshSoon('services', 'sparks', 'healing', 'incidents', 'timeline');
  follow();
  setInterval(poll, 3000);
  setInterval(() => refreshSoon('sparks'), 10000);
  // Wait for the first services so that the logs view has its list.
  // The rollouts need the list of services first.
  loadServices().then(
    () => {
      showView();
      refreshSoon('rollouts');
    },
    showView,
  );
}

start();
