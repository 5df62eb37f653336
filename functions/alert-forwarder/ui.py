"""The alert page (issue 15 §3): every alert's fate, the way falcosidekick-ui shows events, served by the function.

One self-contained HTML page (inline CSS and JavaScript under a per-response CSP nonce; no CDN, no framework,
works offline) that polls ``alerts`` and ``alerts/summary`` relative to itself, so it works both on the function's
own port and behind the gateway at ``/function/alert-forwarder/ui``. Alert text is attacker-controlled (any
sender can put markup in ``output``): the script only ever writes it with ``textContent``.

Authentication without a token in a URL: ``POST ui`` with the form field ``token`` (the alert-forwarder token or
the read-only edgeguard-metrics-token, compared in constant time) starts a session. The cookie holds a random
256-bit id (only its SHA-256 is kept here), is ``HttpOnly; SameSite=Strict`` (and ``Secure`` behind https),
expires with the session (``ui_session_ttl``, 8 h), and logging out needs the session's CSRF token. Sessions are
read-only (the page, ``GET /alerts``); they can never post alerts, flush or test. Login attempts share one
bucket (10 a minute): a token cannot be guessed through the form.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie

from .destinations import COLOURS  # falcosidekick's palette, for badges and the chart
from .edgeguard import http
from .edgeguard.ratelimit import TokenBucket

COOKIE = "edgeguard_af_session"
MAX_SESSIONS = 64


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


class Sessions:
    def __init__(self, ttl: float, *, clock: Callable[[], float] = time.time):
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._by_digest: dict[str, dict] = {}
        self.logins = TokenBucket(10 / 60, 10)

    def create(self, who: str) -> tuple[str, dict]:
        sid = secrets.token_urlsafe(32)
        now = self.clock()
        sess = {"who": who, "created": now, "expires": now + self.ttl, "csrf": secrets.token_urlsafe(24)}
        with self._lock:
            self._by_digest = {d: s for d, s in self._by_digest.items() if s["expires"] > now}
            while len(self._by_digest) >= MAX_SESSIONS:  # the oldest goes: a flood of logins cannot grow memory
                oldest = min(self._by_digest, key=lambda d: self._by_digest[d]["created"])
                del self._by_digest[oldest]
            self._by_digest[_digest(sid)] = sess
        return sid, sess

    def get(self, event) -> dict | None:
        sid = cookie(event, COOKIE)
        if not sid:
            return None
        with self._lock:
            sess = self._by_digest.get(_digest(sid))
            if sess is None:
                return None
            if sess["expires"] <= self.clock():
                self._by_digest.pop(_digest(sid), None)
                return None
            return sess

    def drop(self, event) -> None:
        sid = cookie(event, COOKIE)
        if sid:
            with self._lock:
                self._by_digest.pop(_digest(sid), None)

    def count(self) -> int:
        now = self.clock()
        with self._lock:
            return sum(1 for s in self._by_digest.values() if s["expires"] > now)


def cookie(event, name: str) -> str | None:
    raw = http.header(event, "Cookie")
    if not raw:
        return None
    jar = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def set_cookie(event, value: str, max_age: int) -> str:
    secure = (http.header(event, "X-Forwarded-Proto") or "").lower() == "https"
    return f"{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")


def form(event, max_bytes: int = 4096) -> dict[str, str]:
    body = http.read_body(event, max_bytes=max_bytes)
    if http.media_type(event) != "application/x-www-form-urlencoded":
        raise http.HTTPError(415, "the login form posts application/x-www-form-urlencoded")
    try:
        pairs = urllib.parse.parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=8, strict_parsing=False
        )
    except (UnicodeDecodeError, ValueError):
        raise http.HTTPError(400, "the form is not valid UTF-8 url-encoded data") from None
    return dict(pairs)


def same_origin(event) -> bool:
    """A browser's POST from another site says so (Origin / Sec-Fetch-Site); SameSite=Strict is the other half."""
    site = (http.header(event, "Sec-Fetch-Site") or "").lower()
    if site and site not in ("same-origin", "none"):
        return False
    origin = http.header(event, "Origin")
    if origin and origin != "null":
        host = http.header(event, "X-Forwarded-Host") or http.header(event, "Host") or ""
        return urllib.parse.urlsplit(origin).netloc == host
    return True


def csrf_ok(sess: dict, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(sess["csrf"].encode(), given.encode("utf-8", "replace"))


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def page(html: str, status: int = 200, extra: dict | None = None) -> dict:
    nonce = secrets.token_urlsafe(16)
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
        "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    headers = {**SECURITY_HEADERS, "Content-Security-Policy": csp, **(extra or {})}
    return http.text_response(html.replace("{{nonce}}", nonce), status, "text/html; charset=utf-8", headers)


def _esc(text: str) -> str:
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


STYLE = """
:root{--bg:#0f1720;--panel:#17212b;--line:#263442;--text:#dbe4ec;--dim:#8a9bab;--accent:#00aec7}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--text);font:14px/1.4 system-ui,sans-serif}
header{display:flex;align-items:center;gap:16px;padding:10px 18px;background:var(--panel);
border-bottom:1px solid var(--line)}
header h1{font-size:17px;margin:0}header .grow{flex:1}.dim{color:var(--dim)}
main{padding:14px 18px;display:grid;gap:14px}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{background:var(--panel);border:1px solid var(--line);
border-radius:6px;padding:8px 12px;min-width:140px}
.card b{display:block;font-size:20px}.ok{color:#5bffb5}.bad{color:#ff7b72}.warn{color:#ffc700}
.panel{background:var(--panel);border:1px solid var(--line);border-radius:6px;padding:10px 12px}
.filters{display:flex;flex-wrap:wrap;gap:10px;align-items:end}.filters label{display:grid;gap:2px;font-size:12px;
color:var(--dim)}
input,select,button{background:#0b1117;color:var(--text);border:1px solid var(--line);border-radius:4px;
padding:5px 8px;font:inherit}
button{cursor:pointer;border-color:var(--accent)}
table{width:100%;border-collapse:collapse}th,td{text-align:left;padding:5px 6px;border-bottom:1px solid var(--line);
vertical-align:top}
th{font-size:12px;color:var(--dim);font-weight:600}td.out{font-family:ui-monospace,monospace;font-size:12px;
word-break:break-all;max-width:520px}
.prio{border-radius:3px;padding:1px 6px;color:#111;font-weight:600;font-size:12px;white-space:nowrap}
.st{display:inline-block;border-radius:3px;padding:0 5px;margin:1px 2px;font-size:12px;border:1px solid var(--line)}
.st-delivered{color:#5bffb5}.st-pending,.st-retrying{color:#ffc700}.st-rejected,.st-dropped{color:#ff7b72}
.st-handed_over{color:#68c2ff}
svg{width:100%;height:130px}.legend span{margin-right:10px;font-size:12px}
.login{max-width:380px;margin:12vh auto;background:var(--panel);border:1px solid var(--line);border-radius:8px;
padding:22px}
.login input{width:100%;margin:8px 0 12px}.err{color:#ff7b72}
"""


def login_page(error: str | None = None, status: int = 200) -> dict:
    msg = f'<p class="err" id="login-error">{_esc(error)}</p>' if error else ""
    html = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>edgeguard alerts: sign in</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style nonce="{{{{nonce}}}}">{STYLE}</style></head>
<body><form class="login" method="post" action="ui" id="login">
<h1>edgeguard alert-forwarder</h1><p class="dim">Sign in with the alert-forwarder token or the read-only
edgeguard-metrics-token. The page keeps a session cookie; no token goes into a URL.</p>{msg}
<input type="hidden" name="action" value="login">
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit" id="sign-in">Sign in</button></form></body></html>"""
    return page(html, status)


def app_page(sess: dict) -> dict:
    colours = ",".join(f'"{k}":"{v}"' for k, v in COLOURS.items())
    html = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>edgeguard alerts</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style nonce="{{{{nonce}}}}">{STYLE}</style></head>
<body><header><h1>edgeguard alert-forwarder</h1><span class="dim" id="status">loading…</span><span class="grow"></span>
<span class="dim" id="updated"></span>
<form method="post" action="ui" id="logout"><input type="hidden" name="action" value="logout">
<input type="hidden" name="csrf" value="{_esc(sess["csrf"])}"><button type="submit">Sign out</button></form></header>
<main>
<section class="cards" id="cards"></section>
<section class="panel"><div class="legend" id="legend"></div>
<svg id="chart" viewBox="0 0 600 130" preserveAspectRatio="none"></svg>
<div class="dim" id="chart-caption">alerts per minute, last 60 minutes</div></section>
<section class="panel"><div class="filters">
<label>Priority<select id="f-priority"><option value="">any</option></select></label>
<label>Rule<input id="f-rule" placeholder="contains…"></label>
<label>Source<select id="f-source"><option value="">any</option></select></label>
<label>Destination<select id="f-destination"><option value="">any</option></select></label>
<label>Delivery state<select id="f-state"><option value="">any</option></select></label>
<span class="dim" id="count"></span></div>
<table><thead><tr><th>time</th><th>priority</th><th>rule</th><th>source</th><th>host</th><th>output</th>
<th>route</th><th>destinations</th></tr></thead><tbody id="rows"></tbody></table></section>
</main>
<script nonce="{{{{nonce}}}}">
"use strict";
const COLOURS={{{colours}}};
const PRIOS=Object.keys(COLOURS);
const STATES=["pending","retrying","delivered","rejected","dropped","handed_over","none"];
const $=id=>document.getElementById(id);
function el(tag,cls,text){{const e=document.createElement(tag);if(cls)e.className=cls;
if(text!==undefined)e.textContent=String(text);return e;}}
for(const p of PRIOS){{const o=el("option","", ">= "+p);o.value=">="+p;$("f-priority").appendChild(o);}}
for(const s of STATES){{const o=el("option","",s);o.value=s;$("f-state").appendChild(o);}}
for(const p of PRIOS){{const s=el("span","",p);s.style.color=COLOURS[p];$("legend").appendChild(s);}}
const sources=new Set(), dests=new Set();
function addOption(sel,set,v){{if(v&&!set.has(v)){{set.add(v);const o=el("option","",v);o.value=v;
$(sel).appendChild(o);}}}}
function query(){{const q=new URLSearchParams();
 for(const [k,id] of [["priority","f-priority"],["rule","f-rule"],["source","f-source"],
                       ["destination","f-destination"],["state","f-state"]]){{
  const v=$(id).value.trim();if(v)q.set(k,v);}}
 q.set("limit","200");return q.toString();}}
function fmtTime(t){{const d=new Date(t*1000);return d.toLocaleTimeString();}}
function row(a){{const tr=el("tr");tr.dataset.seq=a.seq;tr.className="alert";
 tr.appendChild(el("td","",fmtTime(a.received)));
 const p=el("span","prio",a.priority);p.style.background=COLOURS[a.priority]||"#ccc";const td=el("td");
td.appendChild(p);tr.appendChild(td);
 tr.appendChild(el("td","rule",a.rule));tr.appendChild(el("td","",a.source));tr.appendChild(el("td","",a.hostname));
 tr.appendChild(el("td","out",a.output));tr.appendChild(el("td","",(a.routes||[]).join(", ")||a.decision||""));
 const dt=el("td");const names=Object.keys(a.destinations||{{}});
 if(!names.length)dt.appendChild(el("span","st st-dropped",a.decision||"no destination"));
 for(const n of names){{const d=a.destinations[n];
  const s=el("span","st st-"+d.state,n+": "+d.state+(d.attempts>1?" ×"+d.attempts:""));
  if(d.last_error)s.title=d.last_error;dt.appendChild(s);}}
 tr.appendChild(dt);return tr;}}
function chart(buckets){{const svg=$("chart");while(svg.firstChild)svg.removeChild(svg.firstChild);
 const w=600/buckets.length;let max=1;for(const b of buckets){{let t=0;for(const p of PRIOS)t+=b.counts[p]||0;
max=Math.max(max,t);}}
 buckets.forEach((b,i)=>{{let y=130;for(const p of PRIOS.slice().reverse()){{const n=b.counts[p]||0;if(!n)continue;
const h=n/max*120;y-=h;
  const r=document.createElementNS("http://www.w3.org/2000/svg","rect");r.setAttribute("x",i*w+0.5);
r.setAttribute("y",y);
  r.setAttribute("width",Math.max(1,w-1));r.setAttribute("height",h);r.setAttribute("fill",COLOURS[p]);
  const t=document.createElementNS("http://www.w3.org/2000/svg","title");t.textContent=n+" "+p;r.appendChild(t);
svg.appendChild(r);}}}});
 $("chart").dataset.total=String(buckets.reduce((s,b)=>s+PRIOS.reduce((a,p)=>a+(b.counts[p]||0),0),0));}}
function cards(s){{const c=$("cards");while(c.firstChild)c.removeChild(c.firstChild);
 const add=(label,value,cls)=>{{const d=el("div","card");d.appendChild(el("span","dim",label));
const b=el("b",cls||"",value);d.appendChild(b);c.appendChild(d);return d;}};
 add("status",s.status,s.status==="ok"?"ok":"bad").id="card-status";
 add("spool depth",s.spool.depth,s.spool.depth?"warn":"ok").id="card-spool";
 for(const [n,d] of Object.entries(s.destinations)){{
  const k=add(n,d.state,d.state==="ok"?"ok":d.state==="disabled"?"dim":"bad");
  k.dataset.destination=n;if(d.last_error)k.title=d.last_error;addOption("f-destination",dests,n);}}
 $("status").textContent=(s.problems||[]).join("; ")||"all destinations ok";}}
async function refresh(){{
 try{{const [r1,r2]=await Promise.all([fetch("alerts?"+query(),{{credentials:"same-origin"}}),
   fetch("alerts/summary",{{credentials:"same-origin"}})]);
  if(r1.status===401||r2.status===401){{location.reload();return;}}
  const list=await r1.json(),sum=await r2.json();const body=$("rows");
  const frag=document.createDocumentFragment();for(const a of list.alerts){{addOption("f-source",sources,a.source);
frag.appendChild(row(a));}}
  while(body.firstChild)body.removeChild(body.firstChild);body.appendChild(frag);
  $("count").textContent=list.returned+" shown of "+list.held+" kept (max "+list.max+")";
  cards(sum);chart(sum.counts);$("updated").textContent="updated "+new Date().toLocaleTimeString();
  document.body.dataset.lastSeq=String(list.last_seq);}}
 catch(e){{$("updated").textContent="update failed: "+e;}}}}
for(const id of ["f-priority","f-source","f-destination","f-state"])$(id).addEventListener("change",refresh);
$("f-rule").addEventListener("input",refresh);
refresh();setInterval(refresh,2000);
</script></body></html>"""
    return page(html)
