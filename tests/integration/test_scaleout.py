"""Scale-out: the plugins behind Dovecot's own proxy, users moving between
backends (docs/scaling.md).

One cluster for the module (scaleout_helpers.Cluster): a proxy instance
in front of backends A and B on loopback ports, plus a stock Dovecot that
gives the reference SEARCH answers. Clients play themselves from distinct
127.0.0.x source addresses; the backends trust only the proxy's address
(127.0.0.1, ::1).

What the tests show:
* access rules on the backends see the client's address, not the
  proxy's, for IMAP (ID x-originating-ip) and POP3 (XCLIENT ADDR), and a
  `from` rule allows and refuses by it; for IMAP, client-name and `port`
  rules see the client's pre-login ID and the port it used on the proxy
  (POP3's XCLIENT carries no local port);
* a client can't choose the address the rules see: not with a pre-login
  ID or XCLIENT sent straight to a backend from an untrusted address, not
  with one sent through the proxy, not with a post-login ID, and not with
  a forged x-forward- field;
* a `tls` rule on the backends sees the client's connection to the
  proxy, whatever the proxy-to-backend hop, through the forwarded
  access_rules_client_tls (Dovecot 2.3's proxy doesn't forward TLS state
  itself; see docs/scaling.md); the forwarding is shown to work, and not
  to be forgeable;
* a POP3 user moved from A to B with `doveadm backup` or `doveadm sync`
  keeps each device's leave-on-server state: the same listing on B as on A;
* searches after a move give stock Dovecot's answers: with B's own
  (rebuilt) index, with A's index carried over when it matches the mail,
  and with a carried index of another mailbox (other GUID, other
  UIDVALIDITY), and with an index carried over from a copy of the mailbox
  that has since diverged (same GUID and UIDVALIDITY, other mail under
  the same UIDs), which B finds out and rebuilds.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from dovecot_instance import make_message
from fts_lmdb_helpers import (expunge_uids, gen_message, gen_queries,
                              indexing_lines, release_index, token)
from fts_lmdb_helpers import assert_same as fts_assert_same
from scaleout_helpers import (FORWARDED_TLS_VALUES, OFFICE_CLIENT, OFFICE_ONLY,
                              OUTSIDE_CLIENT, PROXY_ADDRESS, SPOOF_TARGET, TLS_REQUIRED,
                              UNTRUSTED_DIRECT, Cluster, ProxiedPop3,
                              attempt, crash_lines, fresh_source,
                              listing_without_changes, login_line,
                              mailbox_status, ports)

MOVERS = ("mvbackup", "mvsync")
DEVICES = ("phone", "laptop")
CARRY_OTHER = {"guid": "gina", "uidvalidity": "vera"}
DIVERGED = "adam"
DIVERGED_TAIL = "ada"
# users that live on B from the start
B_ONLY = (*CARRY_OTHER.values(), DIVERGED, DIVERGED_TAIL)
FTS_USERS = ("sara", "cara", *B_ONLY)
# users whose index is built only by `doveadm index` or a search, so that
# no indexer-worker writes to it while a test copies the file
NO_AUTOINDEX = ("cara", *B_ONLY)


def _users() -> list:
    users = [{"name": "pia", "fields": {"access_rules_ruleset": "probe"}},
             {"name": "fred", "fields": {"access_rules_ruleset": "fwd",
                                         "access_rules_client_id": "%{client_id}"}},
             {"name": "olga", "fields": {"access_rules_ruleset": "office"}},
             {"name": "tess", "fields": {"access_rules_ruleset": "tls"}}]
    for acct in MOVERS:
        users.append({"name": acct})
        users += [{"name": f"{acct}-{dev}", "passdb_fields": {"user": acct},
                   "fields": {"pop3_device": dev}} for dev in DEVICES]
    users += [{"name": u, "fields": {"fts_autoindex": "no"} if u in NO_AUTOINDEX else {}}
              for u in FTS_USERS]
    return users


KILLED: set = set()     # indexer-workers a test had to SIGKILL


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(users=_users(), stock_users=list(FTS_USERS),
                initial_routes={u: "b" for u in B_ONLY})
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(autouse=True)
def _cluster_logs(request, cluster):
    """No crash anywhere in the cluster during the test; on failure, print
    the tail of each instance's log lines of this test."""
    marks = {id(i): i.log_mark() for i in cluster.instances()}
    yield
    rep = getattr(request.node, "rep_call", None)
    names = {id(cluster.proxy): "proxy", id(cluster.a): "backend A",
             id(cluster.b): "backend B", id(cluster.stock): "stock"}
    if rep is not None and rep.failed:
        for inst in cluster.instances():
            tail = "\n".join(inst.log_text()[marks[id(inst)]:].splitlines()[-40:])
            print(f"--- {names[id(inst)]}: {inst.log_path} (tail) ---\n{tail}")
    time.sleep(0.1)
    for inst in cluster.instances():
        bad = crash_lines(inst, marks[id(inst)], KILLED)
        assert not bad, f"{names[id(inst)]} crashed:\n" + "\n".join(bad[:10])


PROTOS = ["imap", "pop3"]


# ================================================================ addresses

@pytest.mark.parametrize("client_tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize("proto", PROTOS)
def test_backend_rules_see_client_address_not_proxy(cluster, proto, client_tls):
    """Through the proxy (which connects from 127.0.0.1), the backend's
    rules see each client's own address: the probe rule set refuses every
    session with a reason naming the address it matched."""
    for src in (OFFICE_CLIENT, OUTSIDE_CLIENT):
        mark = cluster.a.log_mark()
        out = attempt(proto, ports(cluster.proxy, proto, client_tls), "pia",
                      source=src, tls=client_tls)
        assert not out.allowed, out.lines
        seen, _ = out.probe()
        assert seen == src, (f"{proto} from {src} via the proxy: the backend's "
                             f"rules saw {seen!r} (proxy is {PROXY_ADDRESS}): "
                             f"{out.lines}")
        # Dovecot's own record of the login on the backend agrees
        assert login_line(cluster.a, proto, src, mark)["rip"] == src


@pytest.mark.parametrize("proto", PROTOS)
def test_network_rule_allows_and_refuses_by_client_address(cluster, proto):
    """A `deny from !<office net>` rule on the backend lets an office
    client in through the proxy and refuses an outside one with the rule's
    reason, although both reach the backend from the proxy's address."""
    cluster.a.deliver("olga", make_message(subject="office mail"))
    port = ports(cluster.proxy, proto, False)
    inside = attempt(proto, port, "olga", source=OFFICE_CLIENT)
    outside = attempt(proto, port, "olga", source=OUTSIDE_CLIENT)
    assert inside.allowed, f"office client refused: {inside.lines}"
    assert not outside.allowed and outside.reason == OFFICE_ONLY, \
        f"outside client not refused by the office rule: {outside.lines}"


@pytest.mark.parametrize("client_tls", [False, True], ids=["plain", "tls"])
def test_imap_client_id_and_proxy_port_reach_the_backend_rules(cluster, client_tls):
    """What else the proxy forwards for IMAP that rules use: the client's
    pre-login ID (imap_id_retain = yes on proxy and backends, and
    access_rules_client_id = %{client_id} on the backends) for
    client-name rules, and the port the client connected to at the proxy
    (ID x-connected-port) for port rules."""
    label = "proxy-imaps" if client_tls else "proxy-imap"
    port = ports(cluster.proxy, "imap", client_tls)
    named = attempt("imap", port, "fred", source=fresh_source(), tls=client_tls,
                    pre_login_id={"name": "fwdtest", "version": "1.0"})
    assert named.reason == f"port={label} name=fwdtest", named.lines
    anonymous = attempt("imap", port, "fred", source=fresh_source(), tls=client_tls)
    assert anonymous.reason == f"port={label} name=none", anonymous.lines


def test_pop3_port_rules_see_the_backend_port(cluster):
    """POP3's XCLIENT carries the client's address and port but not the
    local port: behind the proxy, a POP3 session's `port` is the backend's
    (docs/scaling.md says so; this pins it)."""
    out = attempt("pop3", cluster.proxy.pop3_port, "fred", source=fresh_source())
    assert out.reason == "port=a-pop3 name=none", out.lines


# ================================================================ TLS

# Dovecot 2.3's proxy forwards no TLS state: without
# access_rules_client_tls (forwarded by the proxy, docs/scaling.md) the
# backend's rules saw the proxy-to-backend hop, and the two middle cases
# failed.
TLS_CASES = [
    pytest.param(False, False, id="client-plain,hop-plain"),
    pytest.param(True, False, id="client-tls,hop-plain"),
    pytest.param(False, True, id="client-plain,hop-tls"),
    pytest.param(True, True, id="client-tls,hop-tls"),
]


@pytest.mark.parametrize("client_tls,hop_tls", TLS_CASES)
@pytest.mark.parametrize("proto", PROTOS)
def test_tls_rule_sees_client_tls(cluster, proto, client_tls, hop_tls):
    """`deny tls no` on the backend must admit exactly the clients that use
    TLS to the proxy, whatever the proxy-to-backend hop is. The login
    "tess-tlshop" is tess, proxied over TLS (ssl=any-cert) to the backend's
    imaps/pop3s port; "tess" is proxied in plaintext."""
    login = "tess-tlshop" if hop_tls else "tess"
    out = attempt(proto, ports(cluster.proxy, proto, client_tls), login,
                  source=fresh_source(), tls=client_tls)
    if client_tls:
        assert out.allowed, (f"client used TLS to the proxy, but the backend's "
                             f"TLS rule refused it: {out.lines}")
    else:
        assert not out.allowed and out.reason == TLS_REQUIRED, (
            f"client used plaintext to the proxy, but the backend's TLS rule "
            f"let it in: {out.lines}")


def _client_tls_setting(backend, proto: str, user: str, source: str, mark: int) -> str:
    """The access_rules_client_tls value the backend's userdb gave the
    session from `source` (mail_debug logs each userdb setting)."""
    mpid = re.search(r"mpid=(\d+)", login_line(backend, proto, source, mark)["rest"])[1]
    m = backend.wait_for_log(
        rf"{proto}\({re.escape(user)}\)<{mpid}>.*: Debug: Added userdb setting: "
        r"plugin/access_rules_client_tls=(?P<value>\S*)$", since=mark)
    return m["value"]


@pytest.mark.parametrize("hop_tls", [False, True], ids=["hop-plain", "hop-tls"])
@pytest.mark.parametrize("client_tls", [False, True], ids=["client-plain", "client-tls"])
@pytest.mark.parametrize("proto", PROTOS)
def test_proxy_forwards_client_tls_to_the_backend_userdb(cluster, proto, client_tls,
                                                         hop_tls):
    """The transport of the proposed TLS fix works with stock Dovecot: the
    proxy's forward_tls (from %{secured}) reaches the backend's userdb as
    access_rules_client_tls = tls exactly when the client used TLS to the
    proxy (else plaintext), whatever the hop; a client's forged
    x-forward-tls (IMAP ID) or FORWARD= (XCLIENT) doesn't change it."""
    login = "tess-tlshop" if hop_tls else "tess"
    src = fresh_source()
    mark = cluster.a.log_mark()
    kw = ({"pre_login_id": FORGED_ID} if proto == "imap"
          else {"xclient": FORGED_XCLIENT})
    attempt(proto, ports(cluster.proxy, proto, client_tls), login, source=src,
            tls=client_tls, **kw)
    value = _client_tls_setting(cluster.a, proto, "tess", src, mark)
    assert value == ("tls" if client_tls else "plaintext"), (
        f"backend got access_rules_client_tls={value!r}")


# ================================================================ spoofing

FORGED_ID = {"x-originating-ip": SPOOF_TARGET, "x-originating-port": "4242",
             "x-connected-ip": "10.1.2.3", "x-connected-port": "993",
             "x-session-id": "forgedsession1", "x-proxy-ttl": "5",
             "x-forward-tls": "tls", "name": "spoofer"}
FORGED_XCLIENT = (f"ADDR={SPOOF_TARGET} PORT=4242 SESSION=forgedsession2 TTL=5 "
                  "FORWARD=" + base64.b64encode(b"tls=tls").decode())


@pytest.mark.parametrize("proto", PROTOS)
def test_direct_client_cannot_spoof_its_address(cluster, proto):
    """A client that reaches a backend directly from an untrusted address
    and sends the proxy's address fields (IMAP ID before login, POP3
    XCLIENT) is judged by its own address. The same fields from the
    trusted proxy address do move the address, which shows the forgery
    would have been noticed."""
    port = ports(cluster.a, proto, False)
    kw = ({"pre_login_id": FORGED_ID} if proto == "imap"
          else {"xclient": FORGED_XCLIENT})
    mark = cluster.a.log_mark()
    forged = attempt(proto, port, "pia", source=UNTRUSTED_DIRECT, **kw)
    assert forged.probe()[0] == UNTRUSTED_DIRECT, (
        f"untrusted client's forged address was used: {forged.lines}")
    assert forged.probe()[1] is False, forged.lines
    assert login_line(cluster.a, proto, UNTRUSTED_DIRECT, mark)["rip"] == UNTRUSTED_DIRECT
    # the forged x-forward-tls / FORWARD=tls=... isn't taken either: the
    # backend's userdb has no forwarded value for this session
    assert _client_tls_setting(cluster.a, proto, "pia", UNTRUSTED_DIRECT, mark) \
        not in FORWARDED_TLS_VALUES
    if proto == "pop3":
        assert "not from trusted IP" in forged.lines[1], forged.lines

    control = attempt(proto, port, "pia", source=PROXY_ADDRESS, **kw)
    assert control.probe()[0] == SPOOF_TARGET, (
        f"the trusted address's forwarded address wasn't used, so this test "
        f"can't tell a forgery: {control.lines}")


@pytest.mark.parametrize("proto", PROTOS)
def test_client_cannot_override_what_the_proxy_forwards(cluster, proto):
    """Through the proxy, a client's own ID (IMAP, before login) or XCLIENT
    (POP3) with address fields doesn't change what the backend's rules
    see: the proxy doesn't trust the client, and forwards the address it
    saw (with imap_id_retain the client's other ID fields go along, its
    reserved x- fields don't)."""
    kw = ({"pre_login_id": FORGED_ID} if proto == "imap"
          else {"xclient": FORGED_XCLIENT})
    port = ports(cluster.proxy, proto, False)
    out = attempt(proto, port, "pia", source=OUTSIDE_CLIENT, **kw)
    assert out.probe() == (OUTSIDE_CLIENT, False), (
        f"the client's forged fields reached the backend's rules: {out.lines}")
    # office rule: the forged office address doesn't let an outsider in
    office = attempt(proto, port, "olga", source=OUTSIDE_CLIENT, **kw)
    assert not office.allowed and office.reason == OFFICE_ONLY, office.lines
    # TLS rule: a forged x-forward-tls / FORWARD=tls=tls doesn't make a
    # plaintext client look like a TLS one
    tls = attempt(proto, port, "tess", source=fresh_source(), **kw)
    assert not tls.allowed and tls.reason == TLS_REQUIRED, tls.lines


def test_post_login_id_does_not_move_the_address(cluster):
    """An IMAP ID after login (passed through by the proxy to the backend's
    imap process, where the plugin reads the first one) can't move the
    session out of or into a network: an office client that claims an
    outside address after login keeps its session, and the rules' view of
    the address is still the forwarded one."""
    port = cluster.proxy.imap_port
    inside = attempt("imap", port, "olga", source=OFFICE_CLIENT,
                     post_login_id={"name": "mua", "x-originating-ip": OUTSIDE_CLIENT})
    assert inside.allowed, inside.lines
    probe = attempt("imap", port, "pia", source=OUTSIDE_CLIENT,
                    post_login_id={"x-originating-ip": SPOOF_TARGET})
    assert probe.probe()[0] == OUTSIDE_CLIENT, probe.lines


# ================================================================ POP3 move

def _logins(acct: str) -> list:
    return [acct] + [f"{acct}-{d}" for d in DEVICES]


def _listings(cluster: Cluster, where: str, acct: str) -> dict:
    """What each device (and the account's own login, the device
    "default") is listed now on backend `where`, through the proxy,
    without changing anything (no QUIT)."""
    be = cluster.backend(where)
    return {login: listing_without_changes(cluster.proxy, be, login)
            for login in _logins(acct)}


@pytest.mark.parametrize("command", ["backup", "sync"])
def test_pop3_device_state_moves_with_the_user(cluster, command):
    """keep + new-only on A: the phone fetches everything and deletes two
    messages, the laptop fetches one. After `doveadm <command>` to B and
    the proxy's switch to B, every device is listed on B exactly what it
    was listed on A (same UIDLs, same messages): nothing comes back,
    nothing is lost. The devices then go on from there on B, and the
    final two-way sync of a move leaves B's newer state alone."""
    acct = f"mv{command}"
    a, b, proxy = cluster.a, cluster.b, cluster.proxy
    first = [make_message(subject=f"{acct} {i}") for i in range(6)]
    for msg in first:
        a.deliver(acct, msg)

    phone = ProxiedPop3(proxy, a, f"{acct}-phone")
    listed = phone.listing()
    assert len(listed) == 6, listed
    for num in range(1, 7):
        phone.retr(num)
    phone.dele(2)
    phone.dele(5)
    phone.quit()
    laptop = ProxiedPop3(proxy, a, f"{acct}-laptop")
    laptop.retr(3)
    laptop.quit()
    for i in range(2):
        a.deliver(acct, make_message(subject=f"{acct} later {i}"))

    before = _listings(cluster, "a", acct)
    all_ids = [mid for _, mid in before[acct]]
    first_ids = all_ids[:6]
    # the state is really there (else the comparison below proves nothing)
    assert len(all_ids) == 8
    assert [mid for _, mid in before[f"{acct}-phone"]] == all_ids[6:], before
    assert [mid for _, mid in before[f"{acct}-laptop"]] == \
        [m for m in all_ids if m != first_ids[2]], before

    cluster.dsync("a", "b", acct, command)
    cluster.route(_logins(acct), "b")

    after = _listings(cluster, "b", acct)   # sessions on B, or this times out
    for login in _logins(acct):
        assert after[login] == before[login], (
            f"{login}: listed on B {after[login]}, on A it was {before[login]}")

    # the devices go on from there, on B
    phone = ProxiedPop3(proxy, b, f"{acct}-phone")
    for num in range(1, len(phone.listing()) + 1):
        phone.retr(num)
    phone.quit()
    b.deliver(acct, make_message(subject=f"{acct} on B"))
    now = _listings(cluster, "b", acct)
    newest = now[acct][-1]
    assert now[f"{acct}-phone"] == [newest], now
    assert now[f"{acct}-laptop"] == before[f"{acct}-laptop"] + [newest], now

    # the final two-way sync of a move (docs/scaling.md) must not bring
    # A's older device state back over B's
    cluster.dsync("a", "b", acct, "sync")
    final = _listings(cluster, "b", acct)
    assert final == now, f"after the final sync: {final}, before it: {now}"


# ================================================================ search

def _queries(tags_and_counts) -> list:
    out = ['BODY "commonword"', 'TEXT "für"', 'NOT BODY "commonword"']
    for tag, count in tags_and_counts:
        out += gen_queries(tag, range(count))
        out += [f'BODY "{token(tag, i)}"' for i in range(count)]
    return out


def _search_same_as_stock(cluster: Cluster, user: str, queries, step: str,
                          where: str) -> None:
    """Through the proxy: every query answered as stock Dovecot answers it
    over the same mail (UIDs included); and the session ran on `where`."""
    be = cluster.backend(where)
    mark = be.log_mark()
    fts_assert_same(cluster.proxy, cluster.stock, user, queries, step=step)
    be.wait_for_log(rf"imap-login: Info: Login: user=<{user}>", since=mark)


def _deliver(dcs, user: str, tag: str, indices) -> None:
    """In order on each instance: the backends' fts_autoindex starts an
    indexer-worker that can make LMTP deliveries swap UIDs."""
    for i in indices:
        msg = gen_message(tag, i)
        for dc in dcs:
            dc.deliver_in_order(user, [msg])


def test_search_after_move_uses_an_index_rebuilt_on_b(cluster):
    """Mail on A (with expunges, so UIDs have gaps) moved by dsync: B
    builds its own index, and every answer through the proxy is stock's,
    before and after new mail arrives on B."""
    user, a, b, stock = "sara", cluster.a, cluster.b, cluster.stock
    _deliver([a, stock], user, "mv", range(12))
    for dc in (a, stock):
        expunge_uids(dc, user, "INBOX", [3, 8])
    queries = _queries([("mv", 12)])
    _search_same_as_stock(cluster, user, queries, "on A", "a")

    cluster.dsync("a", "b", user)
    cluster.route([user], "b")
    assert mailbox_status(b, user)["guid"] == mailbox_status(a, user)["guid"]
    _search_same_as_stock(cluster, user, queries, "moved to B", "b")
    assert (b.maildir(user) / "fts-lmdb" / "data.mdb").exists(), \
        "B answered without an index of its own"

    _deliver([b, stock], user, "nb", range(5))
    _search_same_as_stock(cluster, user, queries + _queries([("nb", 5)]),
                          "new mail on B", "b")


def _copy_index(src_dc, dst_dc, user: str) -> Path:
    """Copy the user's LMDB data file from one backend to the other (what
    an admin who rsyncs the home with the index does). lock.mdb is not
    copied: it is per host, and LMDB makes a new one."""
    src = src_dc.maildir(user) / "fts-lmdb" / "data.mdb"
    dst_dir = dst_dc.maildir(user) / "fts-lmdb"
    if (dst_dir / "data.mdb").exists():
        KILLED.update(release_index(dst_dc, user))
        shutil.rmtree(dst_dir)
    st = src.parent.stat()
    for d in (dst_dc.maildir(user), dst_dir):
        d.mkdir(mode=0o700, exist_ok=True)
        os.chown(d, st.st_uid, st.st_gid)
    shutil.copy2(src, dst_dir / "data.mdb")
    os.chown(dst_dir / "data.mdb", st.st_uid, st.st_gid)
    return dst_dir / "data.mdb"


def test_carried_over_index_that_matches_is_used(cluster):
    """A's index copied to B before the final dsync (same mailbox GUID,
    UIDVALIDITY and UIDs): B searches with it without indexing those
    messages again, answers as stock, and adds new mail to it."""
    user, a, b, stock = "cara", cluster.a, cluster.b, cluster.stock
    _deliver([a, stock], user, "cc", range(10))
    res = a.doveadm("index", "-u", user, "INBOX")
    assert res.returncode == 0, res.stderr
    mark = b.log_mark()
    _copy_index(a, b, user)
    cluster.dsync("a", "b", user)
    cluster.route([user], "b")
    queries = _queries([("cc", 10)])
    _search_same_as_stock(cluster, user, queries, "carried index on B", "b")
    time.sleep(0.3)
    assert not indexing_lines(b, mark, user), (
        "B indexed the moved mail again although the carried index matched:\n"
        + "\n".join(indexing_lines(b, mark, user)[:5]))

    _deliver([b, stock], user, "cn", range(4))
    _search_same_as_stock(cluster, user, queries + _queries([("cn", 4)]),
                          "new mail on B, carried index", "b")


@pytest.mark.parametrize("differs", list(CARRY_OTHER))
def test_carried_over_index_of_another_mailbox_is_not_used(cluster, differs):
    """B's mailbox has other mail under the same UIDs, and A's index is
    copied over B's. With another mailbox GUID, or the same GUID (set with
    doveadm mailbox update) but another UIDVALIDITY, the plugin must not
    answer from A's postings: every answer is stock's for B's mail."""
    user = CARRY_OTHER[differs]
    a, b, stock = cluster.a, cluster.b, cluster.stock
    _deliver([a], user, "aa", range(8))
    _deliver([b, stock], user, "bb", range(8))
    res = a.doveadm("index", "-u", user, "INBOX")
    assert res.returncode == 0, res.stderr
    sa, sb = mailbox_status(a, user), mailbox_status(b, user)
    assert sa["guid"] != sb["guid"]
    if differs == "uidvalidity":
        uv = int(sa["uidvalidity"]) + 1000
        res = b.doveadm("mailbox", "update", "-u", user, "--mailbox-guid",
                        sa["guid"], "--uid-validity", str(uv), "INBOX")
        assert res.returncode == 0, res.stderr
        sb = mailbox_status(b, user)
        assert sb["guid"] == sa["guid"] and sb["uidvalidity"] != sa["uidvalidity"]
    _copy_index(a, b, user)
    queries = _queries([("bb", 8), ("aa", 8)])
    _search_same_as_stock(cluster, user, queries,
                          f"A's index on B, {differs} differs", "b")


def _diverge(cluster: Cluster, user: str, tags: tuple, extra: int,
             expunge_on_a: bool) -> None:
    """A and B hold the same mailbox (dsync: same GUID, UIDVALIDITY, UIDs
    1-5). A then gets `extra` messages B never gets and indexes them
    (expunging them after, if asked), A's index is copied to B, and B
    gets as many other messages under the same UIDs. Through the proxy,
    every answer must be stock's for B's mail, and B's log must say which
    UID showed the index to be another copy's."""
    common, only_a, only_b = tags
    a, b, stock = cluster.a, cluster.b, cluster.stock
    _deliver([a, stock], user, common, range(5))
    cluster.dsync("a", "b", user)
    _deliver([a], user, only_a, range(extra))
    res = a.doveadm("index", "-u", user, "INBOX")
    assert res.returncode == 0, res.stderr
    if expunge_on_a:
        expunge_uids(a, user, "INBOX", list(range(6, 6 + extra)))
    _copy_index(a, b, user)
    _deliver([b, stock], user, only_b, range(extra))
    sa, sb = mailbox_status(a, user), mailbox_status(b, user)
    assert (sa["guid"], sa["uidvalidity"], sa["uidnext"]) == \
        (sb["guid"], sb["uidvalidity"], sb["uidnext"])
    queries = _queries([(common, 5), (only_a, extra), (only_b, extra)])
    _search_same_as_stock(cluster, user, queries, "diverged index on B", "b")
    assert b.wait_for_log(rf"UID {5 + extra} is another message than the "
                          r"index has", timeout=10), \
        "B didn't say why it rebuilt the index"


def test_carried_over_index_of_a_diverged_copy_is_not_trusted(cluster):
    """A's UID 6 is another message than B's UID 6; the carried index must
    not answer for A's."""
    _diverge(cluster, DIVERGED, ("dv", "onlya", "onlyb"), 1,
             expunge_on_a=False)


def test_carried_over_index_of_a_diverged_copy_with_an_expunged_tail(cluster):
    """A's extra messages (UIDs 6 and 7) were indexed and then expunged on
    A before its index was copied: the index has no live entry for the
    UIDs B then gives its own mail. The GUIDs the index keeps of expunged
    mail must still tell B's UID 7 from A's."""
    _diverge(cluster, DIVERGED_TAIL, ("dt", "gonea", "tailb"), 2,
             expunge_on_a=True)
