"""A local 易支付 / EPay gateway (彩虹易支付 V1, MD5) for tests, written from the protocol's documentation
(/work/shared/reference/protocols.md and the public SDKs it names), not from the plugin under test.

It listens on 127.0.0.1 (port chosen by the OS) in a thread and speaks:

- ``submit.php`` (GET or POST form): checks pid, the signature and the parameters, creates the order and
  redirects the browser to its cashier page (``/pay/<type>/<trade_no>/``), or shows an error page.
- ``mapi.php`` (POST form): the same checks plus ``clientip`` and ``type``; JSON
  ``{code: 1, msg, trade_no, payurl | qrcode | urlscheme}`` or ``{code: -1, msg}``.
- ``api.php?act=query|order|orders&pid=&key=``: merchant info, one order, a page of orders (JSON).
- The asynchronous notification: :meth:`EpayServer.pay` marks an order paid and sends the documented
  GET to the order's ``notify_url`` (``pid, trade_no, out_trade_no, type, name, money,
  trade_status=TRADE_SUCCESS, param, sign, sign_type``), retrying while the reply body is not
  ``success`` (bounded). :meth:`EpayServer.renotify` sends it again, as the merchant panel's
  "重新通知" does; ``renotify(trade_no, trade_status=...)`` sends another state (``WAIT_BUYER_PAY``,
  ``TRADE_CLOSED`` …), as clones of the gateway do (the documented gateway notifies only
  ``TRADE_SUCCESS``).

Knobs for failure tests: ``delay`` (seconds before any answer), unknown paths answer 404, and any
path under ``/html/`` answers an ordinary HTML page (a web server that is not an EPay gateway).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["EpayServer", "Merchant", "NotifyJob", "epay_sign"]

SIGN_VARIANTS = ("plain", "plain_upper", "amp_key", "amp_key_upper")
PAY_TYPES = ("alipay", "wxpay", "qqpay", "bank", "jdpay")


def epay_sign(params: dict[str, Any], key: str, variant: str = "plain") -> str:
    """The EPay V1 signature: drop ``sign``, ``sign_type`` and empty values, sort by parameter name,
    join ``k=v`` with ``&`` (values not URL-encoded), append the merchant key, MD5 as lowercase hex.
    Clones: ``amp_key*`` append ``&key=KEY``; ``*_upper`` give upper-case hex."""
    pairs = sorted((str(k), str(v)) for k, v in params.items() if k not in ("sign", "sign_type") and str(v) != "")
    text = "&".join(f"{k}={v}" for k, v in pairs)
    text += f"&key={key}" if variant.startswith("amp_key") else key
    digest = hashlib.md5(text.encode()).hexdigest()
    return digest.upper() if variant.endswith("_upper") else digest


@dataclass
class Merchant:
    pid: str
    key: str
    active: int = 1
    money: Decimal = Decimal("0.00")
    sign_variant: str = "plain"
    account: str = "merchant@example.com"
    username: str = "测试商户"


@dataclass
class Order:
    trade_no: str
    pid: str
    out_trade_no: str
    type: str
    name: str
    money: str
    notify_url: str
    return_url: str
    param: str
    addtime: str
    status: int = 0
    endtime: str = ""
    api_trade_no: str = ""
    buyer: str = ""
    clientip: str = ""


@dataclass
class NotifyJob:
    """One notification being delivered (with retries); ``deliveries`` holds (status, body) per try."""

    order: Order
    url: str
    deliveries: list[tuple[int, str]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    acknowledged: bool = False

    def wait(self, timeout: float = 30) -> NotifyJob:
        if not self.done.wait(timeout):
            raise AssertionError(f"notification of {self.order.trade_no} not finished within {timeout}s")
        return self


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _money(value: str) -> str | None:
    """``money`` as the gateway stores it (a DECIMAL(10,2) column: "12.5" becomes "12.50"), or None
    when it is not a positive plain number (the documented check is ``^[0-9.]+$`` and > 0)."""
    if not re.fullmatch(r"[0-9.]+", value or ""):
        return None
    try:
        d = Decimal(value)
    except InvalidOperation:
        return None
    if d <= 0:
        return None
    return str(d.quantize(Decimal("0.01"), ROUND_HALF_UP))


class EpayServer:
    def __init__(
        self,
        merchants: dict[str, str] | None = None,
        *,
        notify_attempts: int = 5,
        notify_interval: float = 0.2,
    ) -> None:
        self.merchants: dict[str, Merchant] = {
            pid: Merchant(pid, key) for pid, key in (merchants or {"1001": "k3yFORtests"}).items()
        }
        self.notify_attempts = notify_attempts
        self.notify_interval = notify_interval
        self.delay = 0.0
        self.orders: dict[str, Order] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.jobs: list[NotifyJob] = []
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> EpayServer:
        handler = type("Handler", (_Handler,), {"epay": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        with self._lock:  # kept-alive connections too: a stopped gateway answers nothing
            conns, self._conns = set(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)
        for job in self.jobs:
            job.done.wait(5)

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    # ---------------------------------------------------------------- test hooks

    def find(self, out_trade_no: str, pid: str | None = None) -> Order:
        with self._lock:
            for o in self.orders.values():
                if o.out_trade_no == out_trade_no and (pid is None or o.pid == pid):
                    return o
        raise KeyError(out_trade_no)

    def notification(self, order: Order, trade_status: str = "TRADE_SUCCESS") -> dict[str, str]:
        """The signed parameters of ``order``'s notification, as the gateway sends them. The
        documented gateway only notifies ``TRADE_SUCCESS``; clones also send other states."""
        m = self.merchants[order.pid]
        params = {
            "pid": order.pid,
            "trade_no": order.trade_no,
            "out_trade_no": order.out_trade_no,
            "type": order.type,
            "name": order.name,
            "money": order.money,
            "trade_status": trade_status,
            "param": order.param,
        }
        params = {k: v for k, v in params.items() if v != ""}
        params["sign"] = epay_sign(params, m.key, m.sign_variant)
        params["sign_type"] = "MD5"
        return params

    def pay(self, out_trade_no: str, buyer: str = "buyer@example.com") -> NotifyJob:
        """The customer paid: mark the order paid, credit the merchant and notify (in a thread)."""
        order = self.find(out_trade_no)
        with self._lock:
            if order.status != 1:
                order.status, order.endtime, order.buyer = 1, _now(), buyer
                order.api_trade_no = f"2024{order.trade_no}"
                self.merchants[order.pid].money += Decimal(order.money)
        return self.renotify(order.trade_no)

    def renotify(self, trade_no: str, trade_status: str = "TRADE_SUCCESS") -> NotifyJob:
        """Send the notification of a paid order (again); with another ``trade_status`` (as clones
        do, e.g. ``WAIT_BUYER_PAY`` or ``TRADE_CLOSED``) that of an unpaid order. Retried (bounded)
        until the body is ``success``."""
        order = self.orders[trade_no]
        assert order.status == 1 or trade_status != "TRADE_SUCCESS", "only paid orders are notified as paid"
        query = urllib.parse.urlencode(self.notification(order, trade_status))
        url = order.notify_url + ("&" if "?" in order.notify_url else "?") + query
        job = NotifyJob(order, url)
        self.jobs.append(job)
        threading.Thread(target=self._deliver, args=(job,), daemon=True).start()
        return job

    def _deliver(self, job: NotifyJob) -> None:
        try:
            for attempt in range(self.notify_attempts):
                if attempt and self._stopping.wait(self.notify_interval):
                    return
                try:
                    with urllib.request.urlopen(job.url, timeout=10) as resp:  # a GET, as documented
                        status, body = resp.status, resp.read().decode("utf-8", "replace")
                except urllib.error.HTTPError as exc:
                    status, body = exc.code, exc.read().decode("utf-8", "replace")
                    exc.close()
                except OSError as exc:
                    status, body = 0, f"{type(exc).__name__}: {exc}"
                job.deliveries.append((status, body))
                if status == 200 and body.strip() == "success":
                    job.acknowledged = True
                    return
        finally:
            job.done.set()

    # ---------------------------------------------------------------- protocol

    def _check_merchant(self, p: dict[str, str]) -> tuple[Merchant | None, str]:
        m = self.merchants.get(p.get("pid", ""))
        if m is None:
            return None, "商户不存在(PID不存在)"
        if not m.active:
            return None, "商户已被封禁"
        if p.get("sign_type", "MD5").upper() != "MD5":
            return None, "签名类型不支持"
        if not p.get("sign") or p["sign"] != epay_sign(p, m.key, m.sign_variant):
            return None, "签名校验失败，请返回重试！"
        return m, ""

    def _create(self, p: dict[str, str], *, api: bool) -> tuple[Order | None, str]:
        m, err = self._check_merchant(p)
        if m is None:
            return None, err
        required = ["out_trade_no", "notify_url", "name", "money"] + (["type", "clientip"] if api else [])
        for k in required:
            if not p.get(k):
                return None, f"{k}不能为空"
        money = _money(p["money"])
        if money is None:
            return None, "金额不合法"
        typ = p.get("type", "")
        if typ and typ not in PAY_TYPES:
            return None, "支付方式(type)不存在"
        if api and p.get("device", "pc") not in ("pc", "mobile", "qq", "wechat", "alipay", "jump"):
            return None, "device参数不合法"
        with self._lock:
            for o in self.orders.values():
                if o.pid == m.pid and o.out_trade_no == p["out_trade_no"]:
                    if o.status == 1:
                        return None, "该订单已支付，请勿重复提交"
                    if (o.money, o.name, o.notify_url) != (money, p["name"], p["notify_url"]):
                        return None, "订单号已存在(参数不一致)"
                    o.type = typ or o.type
                    return o, ""
            order = Order(
                trade_no=time.strftime("%Y%m%d%H%M%S") + f"{next(self._seq):05d}",
                pid=m.pid,
                out_trade_no=p["out_trade_no"],
                type=typ,
                name=p["name"],
                money=money,
                notify_url=p["notify_url"],
                return_url=p.get("return_url", ""),
                param=p.get("param", ""),
                addtime=_now(),
                clientip=p.get("clientip", ""),
            )
            self.orders[order.trade_no] = order
        return order, ""

    def submit(self, p: dict[str, str]) -> tuple[int, dict[str, str], str]:
        order, err = self._create(p, api=False)
        if order is None:
            return 200, {}, f"<html><body><h3>站点提示信息</h3><p>{err}</p></body></html>"
        where = f"/pay/{order.type}/{order.trade_no}/" if order.type else f"/cashier.php?trade_no={order.trade_no}"
        return 302, {"Location": where}, ""

    def mapi(self, p: dict[str, str]) -> dict[str, Any]:
        order, err = self._create(p, api=True)
        if order is None:
            return {"code": -1, "msg": err}
        reply: dict[str, Any] = {"code": 1, "msg": "succ", "trade_no": order.trade_no}
        if order.type == "wxpay":
            reply["qrcode"] = f"weixin://wxpay/bizpayurl?pr={order.trade_no}"
        elif order.type == "alipay" and p.get("device") == "alipay":
            reply["urlscheme"] = f"alipays://platformapi/startapp?saId=10000007&qrcode={order.trade_no}"
        else:
            reply["payurl"] = f"{self.url}pay/{order.type}/{order.trade_no}/"
        return reply

    def api(self, p: dict[str, str]) -> dict[str, Any]:
        act = p.get("act", "")
        if act not in ("query", "order", "orders"):
            return {"code": -5, "msg": "No Act!"}
        m = self.merchants.get(p.get("pid", ""))
        if m is None:
            return {"code": -3, "msg": "PID不存在"}
        if p.get("key", "") != m.key:
            return {"code": -3, "msg": "KEY校验失败"}
        mine = [o for o in self.orders.values() if o.pid == m.pid]
        if act == "query":
            today = time.strftime("%Y-%m-%d")
            return {
                "code": 1,
                "pid": int(m.pid) if m.pid.isdigit() else m.pid,
                "key": m.key,
                "active": m.active,
                "money": str(m.money.quantize(Decimal("0.01"))),
                "type": 1,
                "account": m.account,
                "username": m.username,
                "orders": sum(o.status == 1 for o in mine),
                "order_today": sum(o.status == 1 and o.endtime.startswith(today) for o in mine),
                "order_lastday": 0,
            }
        if act == "order":
            if p.get("trade_no"):
                found = [o for o in mine if o.trade_no == p["trade_no"]]
            elif p.get("out_trade_no"):
                found = [o for o in mine if o.out_trade_no == p["out_trade_no"]]
            else:
                return {"code": -4, "msg": "订单号不能为空"}
            if not found:
                return {"code": -1, "msg": "订单号不存在"}
            return {"code": 1, "msg": "查询订单号成功！", **self._order_fields(found[0])}
        try:
            limit, page = int(p.get("limit", "20")), int(p.get("page", "1"))
        except ValueError:
            return {"code": -4, "msg": "limit/page参数不合法"}
        if not 1 <= limit <= 50 or page < 1:
            return {"code": -4, "msg": "limit最大为50"}
        newest = sorted(mine, key=lambda o: o.trade_no, reverse=True)[(page - 1) * limit : page * limit]
        return {"code": 1, "msg": "查询结算记录成功！", "data": [self._order_fields(o) for o in newest]}

    @staticmethod
    def _order_fields(o: Order) -> dict[str, Any]:
        return {
            "trade_no": o.trade_no,
            "out_trade_no": o.out_trade_no,
            "api_trade_no": o.api_trade_no,
            "type": o.type,
            "pid": int(o.pid) if o.pid.isdigit() else o.pid,
            "addtime": o.addtime,
            "endtime": o.endtime or None,
            "name": o.name,
            "money": o.money,
            "param": o.param,
            "buyer": o.buyer,
            "status": o.status,
        }


class _Handler(BaseHTTPRequestHandler):
    epay: EpayServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _params(self) -> dict[str, str]:
        parsed = urllib.parse.urlsplit(self.path)
        params = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        if self.command == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8", "replace")
            if "application/x-www-form-urlencoded" in (self.headers.get("Content-Type") or ""):
                params.update(urllib.parse.parse_qsl(body, keep_blank_values=True))
        return params

    def _send(self, status: int, body: str, ctype: str, headers: dict[str, str] | None = None) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _json(self, obj: dict[str, Any]) -> None:
        self._send(200, json.dumps(obj, ensure_ascii=False), "application/json; charset=utf-8")

    def _handle(self) -> None:
        epay = self.epay
        path = urllib.parse.urlsplit(self.path).path
        params = self._params()
        epay.requests.append((self.command, path, params))
        if epay.delay and epay._stopping.wait(epay.delay):
            return
        if path.startswith("/html/"):
            self._send(200, "<!DOCTYPE html><html><body><h1>It works!</h1></body></html>", "text/html")
        elif path == "/submit.php":
            status, headers, body = epay.submit(params)
            self._send(status, body, "text/html; charset=utf-8", headers)
        elif path == "/mapi.php":
            if self.command != "POST":
                self._json({"code": -1, "msg": "请使用POST方式提交"})
            else:
                self._json(epay.mapi(params))
        elif path == "/api.php":
            self._json(epay.api(params))
        elif path.startswith("/pay/") or path == "/cashier.php":
            self._send(200, "<html><body><h3>收银台</h3></body></html>", "text/html; charset=utf-8")
        else:
            self._send(404, "<html><body>404 Not Found</body></html>", "text/html")

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def setup(self) -> None:
        super().setup()
        with self.epay._lock:
            self.epay._conns.add(self.connection)

    def finish(self) -> None:
        with self.epay._lock:
            self.epay._conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:
            pass  # the client gave up (timeout tests), or the gateway was stopped
