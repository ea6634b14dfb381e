// multiwan dashboard: vanilla JS (ES2020), no dependencies, charts drawn as
// SVG by hand. Data: GET v1/status (polled every second), GET v1/history
// (once, then the new points every second), v1/events (server-sent
// events). Controls (POST v1/use) only after the user entered the token.
'use strict';
(() => {
  const TOKEN_KEY = 'multiwan.token';
  // Views of the charts: the server keeps an hour of seconds and a day of
  // minutes; the last 10 minutes are drawn from the hour.
  const VIEWS = {
    '10m': { ms: 600e3, src: '1h', name: 'last 10 minutes' },
    '1h': { ms: 3600e3, src: '1h', name: 'last hour' },
    '24h': { ms: 86400e3, src: '24h', name: 'last 24 hours' },
  };
  const SRC_MS = { '1h': 3600e3, '24h': 86400e3 };
  const POLL_MS = { '1h': 1000, '24h': 10000 }; // 24 h has a point a minute
  // Worst first when a chart bucket holds several states: a short outage
  // must stay visible however far the chart is zoomed out.
  const RANK = { '': 1, up: 0, unknown: 2, degraded: 3, down: 4 };
  const MAX_EVENTS = 200;

  const S = {
    status: null, statusOK: false, statusErr: '', lastOK: 0, skew: 0,
    view: '1h', src: '1h', hist: null, histErr: '', histGen: 0, histTimer: 0,
    eventKeys: new Set(), esOpen: false, es: null, esSince: 0,
    token: '', cards: new Map(), cardsKey: '', cursor: null, summary: '',
  };
  try { S.token = sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { /* storage off */ }

  const $ = (id) => document.getElementById(id);
  const now = () => Date.now() + S.skew;

  // h builds an element: h('p', {class: 'x'}, 'text', child...).
  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  }

  // ---- formatting ----
  const pad = (n) => String(n).padStart(2, '0');
  function parseTime(s) {
    if (!s) return 0;
    // Go writes up to nanoseconds; Date.parse wants at most milliseconds.
    const t = Date.parse(String(s).replace(/(\.\d{3})\d+/, '$1'));
    return Number.isFinite(t) && t > 946684800000 ? t : 0; // zero time: unknown
  }
  function clock(t, withSeconds = true) {
    const d = new Date(t);
    const hm = pad(d.getHours()) + ':' + pad(d.getMinutes());
    return withSeconds ? hm + ':' + pad(d.getSeconds()) : hm;
  }
  function stamp(t) {
    const d = new Date(t), n = new Date(now());
    const c = clock(t);
    if (d.toDateString() === n.toDateString()) return c;
    return d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' }) + ' ' + c;
  }
  // ago: the two largest units, as `multiwan status` writes them.
  function ago(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm' + (s % 60) + 's';
    if (s < 86400) return Math.floor(s / 3600) + 'h' + Math.floor((s % 3600) / 60) + 'm';
    return Math.floor(s / 86400) + 'd' + Math.floor((s % 86400) / 3600) + 'h';
  }
  const since = (t) => (t ? ago(now() - t) + ' ago (' + stamp(t) + ')' : '');
  function ms(v) {
    if (v === null || v === undefined) return '–';
    return (v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : Math.round(v)) + ' ms';
  }
  const pct = (v) => (v === null || v === undefined ? '–' : (Math.round(v * 10) / 10) + '%');
  function bps(v) {
    if (v === null || v === undefined) return '–';
    const u = ['bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s', 'Tbit/s'];
    let i = 0;
    while (v >= 1000 && i < u.length - 1) { v /= 1000; i++; }
    return (v < 10 && i > 0 ? v.toFixed(1) : Math.round(v)) + ' ' + u[i];
  }
  const share = (s) => Math.round(s * 1000) / 10 + '%';
  const stateOf = (s) => (s in RANK && s !== '' ? s : 'unknown');

  // ---- HTTP ----
  async function getJSON(url) {
    const r = await fetch(url, { cache: 'no-store', headers: { Accept: 'application/json' } });
    let body = null;
    try { body = await r.json(); } catch (e) { /* not JSON */ }
    if (!r.ok) throw new Error((body && body.error) || 'HTTP ' + r.status);
    const d = Date.parse(r.headers.get('Date') || '');
    if (Number.isFinite(d)) {
      // The router's clock rules "3m ago" and the charts' right edge. The
      // header has seconds only: follow it when it is off by more.
      const skew = d + 500 - Date.now();
      if (Math.abs(skew - S.skew) > 1500) S.skew = skew;
    }
    return body;
  }

  // ---- status ----
  async function refreshStatus() {
    try {
      S.status = await getJSON('v1/status');
      S.statusOK = true; S.lastOK = now(); S.statusErr = '';
    } catch (e) {
      S.statusOK = false; S.statusErr = e.message;
    }
    renderStatus();
  }
  let refreshing = false, again = false;
  async function soon() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    do { again = false; await refreshStatus(); } while (again);
    refreshing = false;
  }
  // A hidden tab asks for nothing; it catches up when shown again.
  async function statusLoop() {
    if (!document.hidden) await refreshStatus();
    setTimeout(statusLoop, 1000);
  }

  // ---- history ----
  // A series is {t0, step, c: {column: array}}: point i is at t0 + i*step.
  function newHist() { return { end: 0, step: 0, health: new Map(), traffic: new Map() }; }
  function merge(H, h, winMs) {
    const step = (h.step_seconds || 0) * 1000, end = parseTime(h.end);
    if (!step || !end) return;
    H.step = step; H.end = Math.max(H.end, end);
    for (const w of h.wans || []) {
      put(H.health, w.wan + '/' + (w.family || 'ipv4'), step, end, winMs, { rtt: w.rtt_ms, loss: w.loss_pct, state: w.state });
    }
    for (const t of h.traffic || []) put(H.traffic, t.wan, step, end, winMs, { inb: t.in_bps, outb: t.out_bps });
  }
  function put(map, key, step, end, winMs, cols) {
    const names = Object.keys(cols);
    const n = Math.max(0, ...names.map((c) => (cols[c] || []).length));
    const max = Math.round(winMs / step) + 1;
    const blank = (c) => (c === 'state' ? '' : null);
    let s = map.get(key);
    const t0 = end - (n - 1) * step;
    let at = s ? Math.round((t0 - s.t0) / step) : 0;
    if (!s || s.step !== step || at < 0 || at > max) {
      s = { t0, step, c: {} };
      for (const c of names) s.c[c] = [];
      map.set(key, s);
      at = 0;
    }
    if (!n) return;
    for (const c of names) {
      const a = s.c[c], src = cols[c] || [];
      if (a.length > at) a.length = at; // the new points replace what overlaps
      while (a.length < at) a.push(blank(c));
      for (let i = 0; i < n; i++) a.push(i < src.length ? src[i] : blank(c));
    }
    const len = s.c[names[0]].length;
    if (len > max) {
      for (const c of names) s.c[c].splice(0, len - max);
      s.t0 += (len - max) * step;
    }
  }
  async function histLoop(gen, full) {
    if (document.hidden) {
      S.histTimer = setTimeout(() => histLoop(gen, full), 1000);
      return;
    }
    const win = S.src;
    let url = 'v1/history?window=' + win;
    // The newest point (this second, or minute) was still filling when it
    // came: ask for it again with the new ones, and let it replace ours.
    if (!full && S.hist && S.hist.end) url += '&since=' + Math.floor((S.hist.end - S.hist.step) / 1000);
    let wait = POLL_MS[win];
    try {
      const h = await getJSON(url);
      if (gen !== S.histGen) return;
      if (full || !S.hist) S.hist = newHist();
      merge(S.hist, h, SRC_MS[win]);
      S.histErr = '';
    } catch (e) {
      if (gen !== S.histGen) return;
      S.histErr = e.message;
      wait = 5000;
    }
    renderCharts();
    S.histTimer = setTimeout(() => histLoop(gen, !S.hist), wait);
  }
  function startHistory() {
    clearTimeout(S.histTimer);
    S.histGen++;
    S.hist = null;
    S.cursor = null;
    histLoop(S.histGen, true);
  }

  // ---- events ----
  function connectEvents() {
    const es = new EventSource('v1/events?past=50');
    S.es = es;
    es.onopen = () => { S.esOpen = true; S.esSince = Date.now(); $('events-msg').hidden = $('events').children.length > 0; renderConn(); };
    es.onmessage = (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch (e) { return; }
      addEvent(ev);
      // Something happened: show its effect now rather than at the next
      // poll.
      if (Date.now() - S.esSince > 1000) soon();
    };
    es.onerror = () => {
      S.esOpen = false;
      renderConn();
      if (es.readyState === EventSource.CLOSED) {
        // Refused (too many streams, server gone): the browser will not
        // retry by itself.
        es.close();
        setTimeout(connectEvents, 5000);
      }
    };
  }
  function addEvent(ev) {
    const key = [ev.time, ev.kind, ev.wan, ev.family, ev.policy, ev.from, ev.to, ev.message].join('|');
    if (S.eventKeys.has(key)) return; // the past of a reconnected stream
    const t = parseTime(ev.time);
    S.eventKeys.add(key);
    const li = eventItem(ev, t);
    li.dataset.t = t;
    li.dataset.key = key;
    const list = $('events');
    let before = list.firstChild;
    while (before && Number(before.dataset.t) > t) before = before.nextSibling;
    list.insertBefore(li, before);
    if (Date.now() - S.esSince > 1500 && now() - t < 15000) li.classList.add('fresh');
    while (list.children.length > MAX_EVENTS) {
      const last = list.lastChild;
      S.eventKeys.delete(last.dataset.key);
      last.remove();
    }
    $('events-msg').hidden = true;
  }
  function eventItem(ev, t) {
    let label = ev.kind, cls = 'kind';
    switch (ev.kind) {
      case 'state':
        label = (ev.wan || '') + (ev.family === 'ipv6' ? ' v6' : '') + ' → ' + (ev.to || '?');
        cls += ' ' + stateOf(ev.to);
        break;
      case 'switch': cls += ' switch'; break;
      case 'apply-failed': case 'reload-refused': cls += ' bad'; break;
      case 'apply-recovered': cls += ' up'; break;
      case 'repair': cls += ' degraded'; break;
      default: break;
    }
    const msg = h('span', { class: 'msg', text: ev.message || '' });
    if (ev.cause && !(ev.message || '').includes(ev.cause)) msg.append(h('span', { class: 'cause', text: 'cause: ' + ev.cause }));
    return h('li', {},
      h('time', { datetime: ev.time, text: t ? stamp(t) : '' }),
      h('span', { class: cls, text: label }),
      msg);
  }

  // ---- controls ----
  function setToken(tok) {
    S.token = tok;
    try { if (tok) sessionStorage.setItem(TOKEN_KEY, tok); else sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* storage off */ }
    renderLock();
    renderStatus();
  }
  function say(text, ok) {
    const p = $('lock-msg');
    p.textContent = text;
    p.classList.toggle('ok', !!ok);
    p.hidden = !text;
  }
  async function post(body, token) {
    const r = await fetch('v1/use', {
      method: 'POST', cache: 'no-store',
      headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    let b = null;
    try { b = await r.json(); } catch (e) { /* not JSON */ }
    return { status: r.status, error: (b && b.error) || 'HTTP ' + r.status };
  }
  async function use(wan, button) {
    if (!S.token) return;
    if (button) button.disabled = true;
    try {
      const r = await post({ wan }, S.token);
      if (r.status === 200) say(wan === 'auto' ? 'Back to the automatic choice.' : 'New connections now prefer ' + wan + '.', true);
      else if (r.status === 403) {
        setToken('');
        say(/read-only/.test(r.error)
          ? 'This dashboard is read-only: the daemon has no control token (http.token_file). Controls are locked again.'
          : 'Wrong token: the daemon refused it (' + r.error + '). Controls are locked again.');
      }
      else say('Could not switch: ' + r.error);
    } catch (e) {
      say('Could not switch: ' + e.message);
    }
    if (button) button.disabled = false;
    refreshStatus();
  }
  function unlock(ev) {
    ev.preventDefault();
    const input = $('token');
    const tok = input.value.trim();
    if (!tok) return;
    // The daemon checks the token on each request that changes something;
    // there is no request that would check it without a change (or an
    // error in the console), so a wrong one shows at the first use.
    input.value = '';
    $('unlock-form').hidden = true;
    setToken(tok);
    say('Controls unlocked for this browser tab; the token is checked when you use them.', true);
  }
  function renderLock() {
    const on = !!S.token;
    $('unlock-toggle').hidden = on;
    $('lock').hidden = !on;
    if (on) $('unlock-form').hidden = true;
    $('unlock-toggle').setAttribute('aria-expanded', String(!$('unlock-form').hidden));
  }

  // ---- rendering: status ----
  function renderConn() {
    const c = $('conn');
    let text = 'live', cls = 'conn live';
    if (!S.statusOK) { text = S.lastOK ? 'no answer from multiwan, retrying' : 'connecting…'; cls = 'conn bad'; }
    else if (!S.esOpen) { text = 'live (events reconnecting…)'; }
    if (c.textContent !== text) c.textContent = text;
    c.className = cls;
  }

  function renderStatus() {
    renderConn();
    const st = S.status;
    if (!st) {
      if (S.statusErr) setSummary([document.createTextNode('Cannot reach multiwan: ' + S.statusErr)], 'Cannot reach multiwan: ' + S.statusErr);
      return;
    }
    renderSummary(st);
    renderDaemon(st.daemon);
    renderPolicies(st);
    renderCards(st);
    const d = st.daemon || {};
    const foot = [];
    if (d.config) foot.push('config ' + d.config);
    const la = parseTime(d.last_apply);
    if (la) foot.push('last apply ' + since(la));
    if (S.lastOK) foot.push('data as of ' + clock(S.lastOK));
    $('foot').textContent = foot.join(' · ');
  }

  function setSummary(nodes, text) {
    if (text === S.summary) return; // announce changes only
    S.summary = text;
    $('summary').replaceChildren(...nodes);
    document.title = 'multiwan: ' + text;
  }
  function renderSummary(st) {
    const nodes = [], words = [];
    if (!S.statusOK) {
      nodes.push('No answer from multiwan since ' + clock(S.lastOK) + ' (' + S.statusErr + '); retrying. ');
      words.push('stale');
    }
    for (const w of st.wans) {
      const s = stateOf(w.state);
      nodes.push(h('span', { class: 'chip ' + s, text: w.name + ' ' + s }));
      words.push(w.name + ' ' + s);
      if (w.ipv6 && w.ipv6.state !== w.state) {
        const s6 = stateOf(w.ipv6.state);
        nodes.push(h('span', { class: 'chip ' + s6, text: w.name + ' IPv6 ' + s6 }));
        words.push(w.name + ' IPv6 ' + s6);
      }
    }
    const p = (st.policies || [])[0];
    if (p) {
      const where = p.active.length ? p.active.map((a) => a.wan + ' ' + share(a.share)).join(', ') : 'no usable WAN';
      const t = ' New connections (' + p.name + '): ' + where + '.';
      nodes.push(t);
      words.push(t);
    }
    if (st.override) {
      nodes.push(' Manual choice: ' + st.override + '.');
      words.push('override ' + st.override);
    }
    setSummary(nodes, words.join(', '));
  }

  function renderDaemon(d) {
    const items = [];
    if (d) {
      if (d.apply_error) {
        let t = 'Making the kernel match the plan FAILED';
        if (d.apply_failures > 1) t += ' ' + d.apply_failures + ' times';
        const at = parseTime(d.apply_error_at);
        if (at) t += ', last ' + ago(now() - at) + ' ago';
        t += ': ' + d.apply_error;
        const nr = parseTime(d.next_retry);
        if (nr) t += nr > now() ? '; retrying in ' + ago(nr - now() + 999) : '; retrying now';
        items.push(t);
      }
      if (d.repairs > 0 || d.repair_backoff) {
        let t = 'Repaired state other programs removed: ' + d.repairs + (d.repairs === 1 ? ' time' : ' times');
        const at = parseTime(d.last_repair_at);
        if (at) t += ', last ' + ago(now() - at) + ' ago';
        if (d.last_repair) t += ': ' + d.last_repair;
        items.push(t);
        if (d.repair_backoff) items.push('Repairs slowed down: ' + d.repair_backoff);
      }
      for (const n of d.notes || []) items.push('Note: ' + n);
    }
    const key = items.join('\n');
    const sec = $('daemon');
    sec.hidden = items.length === 0;
    if (sec.dataset.key !== key) {
      sec.dataset.key = key;
      $('daemon-list').replaceChildren(...items.map((t) => h('li', { text: t })));
    }
  }

  function colourIndex(st) {
    const m = new Map();
    st.wans.forEach((w, i) => m.set(w.name, i % 6));
    return m;
  }
  function renderPolicies(st) {
    const ov = $('override');
    ov.replaceChildren(st.override ? h('strong', { text: 'Manual choice: ' + st.override }) : 'Choice: automatic (health)');
    $('auto').hidden = !S.token || !st.override;
    const box = $('policies');
    const key = JSON.stringify([st.wans.map((w) => w.name), st.policies, st.policies6]);
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    const ci = colourIndex(st);
    const rows = [];
    const add = (list, fam) => {
      for (const p of list || []) {
        const bar = h('div', { class: 'bar', role: 'img' });
        let label;
        if (p.active.length) {
          label = p.active.map((a) => a.wan + ' ' + share(a.share)).join(', ');
          for (const a of p.active) {
            const seg = h('span', { class: 'c' + (ci.get(a.wan) || 0), text: a.wan + ' ' + share(a.share), title: a.wan + ' ' + share(a.share) });
            seg.style.flexGrow = String(a.share); // CSSOM: allowed by the CSP
            seg.style.flexBasis = '0';
            bar.append(seg);
          }
        } else {
          label = 'no usable WAN: new connections get ' + (p.last_resort || 'unreachable');
          bar.append(h('span', { class: 'lr', text: label }));
        }
        bar.setAttribute('aria-label', p.name + (fam ? ' ' + fam : '') + ': ' + label);
        rows.push(h('div', { class: 'policy' },
          h('div', { class: 'name' }, p.name, fam ? h('small', { text: ' ' + fam }) : null), bar));
      }
    };
    add(st.policies, st.policies6 ? 'IPv4' : '');
    add(st.policies6, 'IPv6');
    box.replaceChildren(...(rows.length ? rows : [h('p', { class: 'muted', text: 'No policies.' })]));
  }

  // ---- WAN cards ----
  function renderCards(st) {
    const key = st.wans.map((w) => w.name + (w.ipv6 ? '+6' : '')).join(',');
    if (key !== S.cardsKey) buildCards(st);
    const uses = usesOf(st.policies, ''), uses6 = usesOf(st.policies6, ' (IPv6)');
    for (const w of st.wans) {
      const c = S.cards.get(w.name);
      if (!c) continue;
      const s = stateOf(w.state);
      c.root.className = 'wan ' + s;
      c.chip.className = 'chip ' + s;
      c.chip.textContent = s;
      const sinceT = parseTime(w.since);
      c.since.textContent = sinceT ? s + ' for ' + ago(now() - sinceT) + ' · since ' + stamp(sinceT) : '';
      famRow(c.fams[0], 'IPv4', w, !!w.ipv6);
      if (w.ipv6) famRow(c.fams[1], 'IPv6', w.ipv6, true);
      const u = [...(uses.get(w.name) || []), ...(uses6.get(w.name) || [])];
      c.uses.textContent = u.length ? 'New connections: ' + u.join(', ') : 'Takes no new connections now.';
      c.tag.hidden = st.override !== w.name;
      c.use.hidden = !S.token || st.override === w.name;
    }
  }
  function usesOf(policies, suffix) {
    const m = new Map();
    for (const p of policies || []) {
      for (const a of p.active) {
        const list = m.get(a.wan) || [];
        list.push(p.name + suffix + ' ' + share(a.share));
        m.set(a.wan, list);
      }
    }
    return m;
  }
  // famRow shows one family's health and addressing; the family's name,
  // state and age only when the WAN has two (the header says it for one).
  function famRow(row, name, f, both) {
    const s = stateOf(f.state);
    const t = parseTime(f.since);
    const parts = [];
    if (both) parts.push(h('span', { class: 'fname', text: name }), h('span', { class: 'chip ' + s, text: s }));
    parts.push(
      h('span', {}, h('span', { class: 'k', text: 'RTT ' }), s === 'unknown' || (s === 'down' && !f.rtt_ms) ? '–' : ms(f.rtt_ms)),
      h('span', {}, h('span', { class: 'k', text: 'loss ' }), s === 'unknown' ? '–' : pct(f.loss_pct)));
    if (both && t) parts.push(h('span', { class: 'k', text: 'for ' + ago(now() - t) }));
    parts.push(h('span', { class: 'addr', text: 'via ' + (f.gateway || '–') + ' · address ' + (f.address || '–') }));
    row.replaceChildren(...parts);
  }
  function buildCards(st) {
    S.cardsKey = st.wans.map((w) => w.name + (w.ipv6 ? '+6' : '')).join(',');
    S.cards.clear();
    const box = $('wans');
    box.replaceChildren();
    for (const w of st.wans) {
      const id = 'wan-' + w.name;
      const chip = h('span', { class: 'chip' });
      const sinceEl = h('p', { class: 'since' });
      const tag = h('span', { class: 'tag', text: 'preferred (manual)', hidden: true });
      const useBtn = h('button', { type: 'button', class: 'btn control', text: 'Use ' + w.name, hidden: true });
      useBtn.addEventListener('click', () => use(w.name, useBtn));
      const fams = [h('div', { class: 'fam' })];
      if (w.ipv6) fams.push(h('div', { class: 'fam' }));
      const uses = h('p', { class: 'uses' });
      const charts = [chartBox(w.name + '/ipv4', 'health', w.ipv6 ? 'IPv4 RTT, loss and state' : 'RTT, loss and state')];
      if (w.ipv6) charts.push(chartBox(w.name + '/ipv6', 'health', 'IPv6 RTT, loss and state'));
      const traffic = chartBox(w.name, 'traffic', 'Traffic');
      const root = h('article', { class: 'wan', 'aria-labelledby': id, 'data-wan': w.name },
        h('div', { class: 'wan-head' },
          h('h3', { id }, w.name, w.interface && w.interface !== w.name ? h('span', { class: 'iface', text: ' ' + w.interface }) : null),
          chip, tag, useBtn),
        sinceEl,
        h('div', { class: 'fams' }, ...fams), uses, ...charts.map((c) => c.root), traffic.root);
      box.append(root);
      S.cards.set(w.name, { root, chip, since: sinceEl, tag, use: useBtn, fams, uses, charts, traffic });
    }
    renderCharts();
  }

  // ---- charts ----
  function chartBox(key, kind, title) {
    const read = h('span', { class: 'read' });
    const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    svg.setAttribute('role', 'img');
    const empty = h('p', { class: 'empty', hidden: true });
    const root = h('div', { class: 'chart ' + kind }, h('h4', {}, title, read), svg, empty);
    const c = { key, kind, root, svg, read, empty, w: 0 };
    const move = (e) => {
      if (!c.geom) return;
      const r = svg.getBoundingClientRect();
      const x = ((e.clientX - r.left) / r.width) * c.geom.W;
      if (x < c.geom.L || x > c.geom.L + c.geom.PW) { leave(); return; }
      S.cursor = { key: kind + ':' + key, t: c.geom.t0 + ((x - c.geom.L) / c.geom.PW) * c.geom.win };
      drawChart(c);
    };
    const leave = () => { if (S.cursor && S.cursor.key === kind + ':' + key) { S.cursor = null; drawChart(c); } };
    svg.addEventListener('pointermove', move);
    svg.addEventListener('pointerdown', move);
    svg.addEventListener('pointerleave', leave);
    return c;
  }

  // dataStart is when the history starts (the daemon keeps it in memory:
  // its start), or 0.
  function dataStart(H) {
    let first = 0;
    for (const s of H.health.values()) {
      const i = s.c.state.findIndex((v) => v !== '');
      if (i >= 0 && (!first || s.t0 + i * s.step < first)) first = s.t0 + i * s.step;
    }
    return first;
  }
  function renderCharts() {
    const msg = $('hist-msg');
    // A view longer than the history is drawn from where the history
    // starts (at least a minute), not as an empty chart with a sliver.
    const view = VIEWS[S.view].ms;
    S.span = view;
    let note = '';
    if (S.hist && S.hist.end) {
      const first = dataStart(S.hist);
      if (first && S.hist.end - first < view) {
        S.span = Math.max(60e3, S.hist.end - first);
        note = 'History starts at ' + stamp(first) + ', when multiwan started: the graphs show the ' + ago(S.hist.end - first) + ' since.';
      }
    }
    if (S.histErr) note = 'History not available: ' + S.histErr + (S.hist ? ' (showing what was loaded)' : '');
    msg.hidden = !note;
    msg.textContent = note;
    for (const card of S.cards.values()) {
      for (const c of card.charts) drawChart(c);
      drawChart(card.traffic);
    }
  }

  // buckets groups a series' points into n buckets over [t0, t0+win].
  function buckets(s, t0, win, n, fold, len) {
    const out = new Array(n).fill(null);
    if (!s) return out;
    const bw = win / n;
    for (let i = 0; i < len; i++) {
      const t = s.t0 + i * s.step;
      if (t < t0 - s.step / 2) continue;
      const b = Math.min(n - 1, Math.max(0, Math.floor((t - t0) / bw)));
      out[b] = fold(out[b], s.c, i);
    }
    return out;
  }
  function nice(v) {
    if (!(v > 0)) return 1;
    const e = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (v <= m * e) return m * e;
    return 10 * e;
  }
  function ticks(t0, win, PW) {
    const H = 3600e3, M = 60e3;
    const steps = [10e3, 15e3, 30e3, M, 2 * M, 5 * M, 10 * M, 15 * M, 30 * M, H, 2 * H, 3 * H, 4 * H, 6 * H, 12 * H];
    const step = steps.find((s) => (PW / win) * s >= 70) || steps[steps.length - 1];
    const off = new Date(t0).getTimezoneOffset() * 60e3;
    const out = [];
    const margin = (20 / PW) * win; // no label cut by the edges
    for (let t = Math.ceil((t0 - off) / step) * step + off; t <= t0 + win - margin; t += step) if (t >= t0 + margin) out.push(t);
    out.seconds = step < 60e3;
    return out;
  }
  const f1 = (v) => Math.round(v * 10) / 10;
  // recent is the newest value of the last three points: the newest point
  // (this second) may not have had its probe round yet.
  function recent(a) {
    for (let i = a.length - 1; i >= Math.max(0, a.length - 3); i--) if (a[i] !== null && a[i] !== undefined) return a[i];
    return null;
  }
  const num = (v) => String(+v.toFixed(v < 1 ? 2 : 1));

  function drawChart(c) {
    const W = Math.max(240, Math.round(c.root.clientWidth || 600));
    const H = S.hist;
    const win = S.span || VIEWS[S.view].ms;
    const series = H ? (c.kind === 'health' ? H.health : H.traffic).get(c.key) : null;
    const has = series && Object.values(series.c)[0].length > 0;
    c.empty.hidden = !!has;
    c.svg.hidden = !has;
    if (!has) {
      c.geom = null;
      c.empty.textContent = S.hist ? 'No history yet.' : S.histErr ? 'History not available.' : 'Loading history…';
      c.read.textContent = '';
      return;
    }
    const end = H.end, t0 = end - win;
    const L = 50, R = 8, PW = W - L - R;
    const n = Math.max(1, Math.min(Math.floor(PW / 2), Math.ceil(win / series.step)));
    const x = (t) => L + ((t - t0) / win) * PW;
    const bx = (i) => L + ((i + 0.5) / n) * PW;
    const cur = S.cursor && S.cursor.key === c.kind + ':' + c.key ? S.cursor.t : null;
    const curB = cur === null ? -1 : Math.min(n - 1, Math.max(0, Math.floor(((cur - t0) / win) * n)));
    const wname = c.key.split('/')[0];
    c.geom = { W, L, PW, t0, win };
    let svg = '', label = '';
    const tks = ticks(t0, win, PW);
    const timeAxis = (y) => tks.map((t) => '<text x="' + f1(x(t)) + '" y="' + y + '" text-anchor="middle">' + clock(t, tks.seconds) + '</text>').join('');
    const vgrid = (y0, y1) => tks.map((t) => '<line class="grid" x1="' + f1(x(t)) + '" x2="' + f1(x(t)) + '" y1="' + y0 + '" y2="' + y1 + '"/>').join('');
    if (c.kind === 'health') {
      const b = buckets(series, t0, win, n, (acc, col, i) => {
        acc = acc || { sum: 0, cnt: 0, loss: null, st: null };
        const r = col.rtt[i], l = col.loss[i], s = col.state[i] || '';
        if (r !== null && r !== undefined) { acc.sum += r; acc.cnt++; }
        if (l !== null && l !== undefined) acc.loss = Math.max(acc.loss === null ? 0 : acc.loss, l);
        if (acc.st === null || RANK[s] > RANK[acc.st]) acc.st = s in RANK ? s : 'unknown';
        return acc;
      }, series.c.rtt.length);
      const rtt = b.map((a) => (a && a.cnt ? a.sum / a.cnt : null));
      const ymax = nice(Math.max(1, ...rtt.filter((v) => v !== null)) * 1.1);
      const top = 6, RH = 110, lossY = top + RH + 8, LH = 24, bandY = lossY + LH + 6, BH = 12, axisY = bandY + BH + 14;
      const HH = axisY + 2;
      const y = (v) => top + RH - (v / ymax) * RH;
      // State: tint behind the RTT lane and a band below, worst state
      // of each bucket, runs merged.
      let tint = '', band = '', downs = 0, downMs = 0;
      for (let i = 0; i < n;) {
        if (!b[i]) { i++; continue; }
        const st = b[i].st;
        let j = i + 1;
        while (j < n && b[j] && b[j].st === st) j++;
        const x0 = f1(L + (i / n) * PW), w = f1(((j - i) / n) * PW);
        const cls = st === '' ? 'none' : st;
        band += '<rect class="s-' + cls + '" x="' + x0 + '" y="' + bandY + '" width="' + w + '" height="' + BH + '"/>';
        if (st !== 'up') tint += '<rect class="t-' + cls + '" x="' + x0 + '" y="' + top + '" width="' + w + '" height="' + RH + '"/>';
        if (st === 'down') { downs++; downMs += ((j - i) / n) * win; }
        i = j;
      }
      let grid = vgrid(top, top + RH);
      for (const v of [0, ymax / 2, ymax]) {
        grid += '<line class="grid" x1="' + L + '" x2="' + (L + PW) + '" y1="' + f1(y(v)) + '" y2="' + f1(y(v)) + '"/>';
        grid += '<text x="' + (L - 5) + '" y="' + f1(y(v) + 4) + '" text-anchor="end">' + (v === 0 ? '0' : num(v) + (v === ymax ? ' ms' : '')) + '</text>';
      }
      let path = '', pen = false;
      for (let i = 0; i < n; i++) {
        if (rtt[i] === null) { pen = false; continue; }
        const p = f1(bx(i)) + ' ' + f1(y(rtt[i]));
        const alone = !(i + 1 < n && rtt[i + 1] !== null);
        path += (pen ? 'L' : 'M') + p + (!pen && alone ? 'l0.01 0' : '');
        pen = true;
      }
      let loss = '';
      for (let i = 0; i < n; i++) {
        const l = b[i] && b[i].loss;
        if (l > 0) {
          const hgt = Math.max(1, (Math.min(100, l) / 100) * LH);
          loss += '<rect class="lossbar" x="' + f1(L + (i / n) * PW) + '" y="' + f1(lossY + LH - hgt) + '" width="' + f1(PW / n + 0.6) + '" height="' + f1(hgt) + '"/>';
        }
      }
      const v6 = c.key.endsWith('/ipv6') ? ' v6' : '';
      svg = tint + grid +
        '<line class="axis" x1="' + L + '" x2="' + (L + PW) + '" y1="' + (lossY + LH) + '" y2="' + (lossY + LH) + '"/>' + loss +
        '<text x="' + (L - 5) + '" y="' + (lossY + LH - 6) + '" text-anchor="end" class="lane">loss</text>' +
        band + '<text x="' + (L - 5) + '" y="' + (bandY + 10) + '" text-anchor="end" class="lane">state</text>' +
        '<path class="rtt' + v6 + '" d="' + path + '"/>' + timeAxis(axisY);
      if (curB >= 0) svg += '<line class="cursor" x1="' + f1(bx(curB)) + '" x2="' + f1(bx(curB)) + '" y1="' + top + '" y2="' + (bandY + BH) + '"/>';
      c.svg.setAttribute('viewBox', '0 0 ' + W + ' ' + HH);
      // Readout: the hovered bucket, or the latest point.
      if (curB >= 0 && b[curB]) {
        const a = b[curB];
        c.read.textContent = stamp(t0 + ((curB + 0.5) / n) * win) + ' · ' + ms(rtt[curB]) + ' · loss ' + pct(a.loss) + ' · ' + (a.st || 'not running');
      } else {
        const down = series.c.state[series.c.state.length - 1] === 'down';
        c.read.textContent = 'now ' + (down ? '–' : ms(recent(series.c.rtt))) + ' · loss ' + pct(recent(series.c.loss));
      }
      const rv = rtt.filter((v) => v !== null);
      label = wname + (v6 ? ' IPv6' : '') + ', ' + VIEWS[S.view].name + ': RTT up to ' +
        ms(rv.length ? Math.max(...rv) : null) + '; ' + (downs ? 'down ' + downs + (downs === 1 ? ' time' : ' times') + ', about ' + ago(downMs) + ' in all' : 'never down');
    } else {
      // This second's traffic is still being counted: it is left out
      // until it is over (a minute's is an average, fine as it goes).
      const done = Math.max(1, series.c.inb.length - (series.step <= 1000 ? 1 : 0));
      const last = done - 1;
      const b = buckets(series, t0, win, n, (acc, col, i) => {
        acc = acc || { i: 0, o: 0, cnt: 0 };
        const iv = col.inb[i], ov = col.outb[i];
        if (iv !== null && iv !== undefined) { acc.i += iv; acc.o += ov || 0; acc.cnt++; }
        return acc;
      }, done);
      const inb = b.map((a) => (a && a.cnt ? a.i / a.cnt : null));
      const outb = b.map((a) => (a && a.cnt ? a.o / a.cnt : null));
      const ymax = nice(Math.max(1000, ...inb.filter((v) => v !== null), ...outb.filter((v) => v !== null)) * 1.1);
      const top = 6, TH = 64, axisY = top + TH + 14, HH = axisY + 2;
      const y = (v) => top + TH - (v / ymax) * TH;
      let grid = vgrid(top, top + TH);
      for (const v of [0, ymax / 2, ymax]) {
        grid += '<line class="grid" x1="' + L + '" x2="' + (L + PW) + '" y1="' + f1(y(v)) + '" y2="' + f1(y(v)) + '"/>';
        grid += '<text x="' + (L - 5) + '" y="' + f1(y(v) + 4) + '" text-anchor="end">' + (v === 0 ? '0' : v === ymax ? bps(v).replace('it/s', '/s') : bps(v).replace(/ ?[kMGT]?bit\/s/, '')) + '</text>';
      }
      const line = (vals, close) => {
        let d = '', run = [];
        const flush = () => {
          if (!run.length) return;
          d += 'M' + run.map(([i, v]) => f1(bx(i)) + ' ' + f1(y(v))).join('L');
          if (close) d += 'L' + f1(bx(run[run.length - 1][0])) + ' ' + (top + TH) + 'L' + f1(bx(run[0][0])) + ' ' + (top + TH) + 'Z';
          run = [];
        };
        vals.forEach((v, i) => { if (v === null) flush(); else run.push([i, v]); });
        flush();
        return d;
      };
      svg = grid + '<path class="in" d="' + line(inb, true) + '"/><path class="out" d="' + line(outb, false) + '"/>' + timeAxis(axisY);
      if (curB >= 0) svg += '<line class="cursor" x1="' + f1(bx(curB)) + '" x2="' + f1(bx(curB)) + '" y1="' + top + '" y2="' + (top + TH) + '"/>';
      c.svg.setAttribute('viewBox', '0 0 ' + W + ' ' + HH);
      if (curB >= 0 && b[curB]) c.read.textContent = stamp(t0 + ((curB + 0.5) / n) * win) + ' · in ' + bps(inb[curB]) + ' · out ' + bps(outb[curB]);
      else c.read.textContent = 'now in ' + bps(series.c.inb[last]) + ' · out ' + bps(series.c.outb[last]);
      label = wname + ' traffic, ' + VIEWS[S.view].name + ': now in ' + bps(series.c.inb[last]) + ', out ' + bps(series.c.outb[last]);
    }
    c.svg.setAttribute('aria-label', label);
    c.svg.innerHTML = svg;
  }

  // ---- start ----
  function init() {
    $('unlock-toggle').addEventListener('click', () => {
      const f = $('unlock-form');
      f.hidden = !f.hidden;
      renderLock();
      if (!f.hidden) $('token').focus();
    });
    $('unlock-form').addEventListener('submit', unlock);
    $('lock').addEventListener('click', () => { setToken(''); say('Controls locked.', true); });
    $('auto').addEventListener('click', (e) => use('auto', e.currentTarget));
    for (const r of document.querySelectorAll('input[name="window"]')) {
      r.addEventListener('change', () => {
        if (!r.checked || !VIEWS[r.value]) return;
        S.view = r.value;
        S.cursor = null;
        if (VIEWS[r.value].src !== S.src) { S.src = VIEWS[r.value].src; startHistory(); }
        renderCharts();
      });
    }
    let pending = false;
    new ResizeObserver(() => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => { pending = false; renderCharts(); });
    }).observe($('wans'));
    document.addEventListener('visibilitychange', () => { if (!document.hidden) soon(); });
    renderLock();
    statusLoop();
    startHistory();
    connectEvents();
  }
  init();
})();
