// The order page's live updates: no build, no dependencies. The page works
// without it; with it, a status change the SSE watch reports replaces the page's
// live part (server-rendered) and the version vector the correction form sends.
(function () {
  'use strict';
  var live = document.getElementById('live');
  var result = document.getElementById('result');
  if (result && location.hash === '#result') { result.focus(); }
  if (!live || live.dataset.archived || !window.EventSource || !window.fetch) { return; }

  var base = location.pathname.replace(/\/+$/, '');
  var state = document.getElementById('live-state');
  var busy = false, again = false, polls = 0;

  function say(msg) { if (state) { state.textContent = msg; } }

  function syncForm() {
    var observed = document.getElementById('observed');
    var text = document.getElementById('observed-text');
    if (observed) { observed.value = live.dataset.observed; }
    if (text) { text.textContent = live.dataset.observedText; }
  }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(base + '/live', { credentials: 'same-origin', headers: { Accept: 'text/html' } })
      .then(function (r) {
        if (r.status === 401) { throw new Error('Your session has ended: reload the page to sign in again.'); }
        if (!r.ok) { throw new Error('Could not refresh the order (HTTP ' + r.status + ').'); }
        return r.text();
      })
      .then(function (html) {
        var t = document.createElement('template');
        t.innerHTML = html.trim();
        var next = t.content.firstElementChild;
        if (!next || next.id !== 'live') { throw new Error('Could not refresh the order.'); }
        var before = live.dataset.status;
        live.replaceWith(next);
        live = next;
        syncForm();
        if (live.dataset.status !== before) {
          say('Live: the status changed to ' + live.dataset.status.replace(/_/g, ' ') + ' (WAL sequence ' + live.dataset.walSeq + ').');
        }
        // Milestone messages follow a change within moments: look again until
        // none is owed, for a while.
        if (live.dataset.owed && polls < 30) { polls++; setTimeout(refresh, 1000); } else { polls = 0; }
      })
      .catch(function (e) { say(e.message); })
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  var es = new EventSource(base + '/watch');
  es.onopen = function () { say('Live: status changes appear here as they happen.'); };
  es.onerror = function () { say('Live updates interrupted; reconnecting…'); };
  es.addEventListener('status', function (e) {
    // The watch replays the order's changes from its first event: only newer
    // ones than the page shows matter.
    if (Number(e.lastEventId) > Number(live.dataset.walSeq)) { refresh(); }
  });
  if (live.dataset.owed) { setTimeout(refresh, 1000); }
})();
