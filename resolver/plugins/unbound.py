"""blokir inside Unbound: the script Unbound's Python module (pythonmod) runs.

unbound.conf (`blokir plugin unbound -c CONFIG` prints the exact lines and environment):

    server:
        module-config: "python validator iterator"
    python:
        python-script: "<this file>"

Unbound runs this file as `__main__` of its embedded interpreter, calls `init_standard` once,
then `operate` for every query that is not answered from its cache:

- MODULE_EVENT_NEW / PASS: the question name is matched against blokir's index; a blocked name
  gets the list's block answer through Unbound's reply path (a message built from records,
  stored in Unbound's message cache, so its cache and `unbound-control stats` see it) with the
  RFC 8914 Extended DNS Error on the EDNS options of the reply; anything else goes on to the
  next module (validator, iterator).
- MODULE_EVENT_MODDONE: the resolved answer's CNAME/DNAME chain is inspected; a chain into a
  blocked name replaces the answer (and the cached copy) with the block answer for the question.

The decision itself is resolver/plugins/engine.py; this file is glue to Unbound's API only.
"""

from __future__ import annotations

import importlib
import logging
import os
import site
import socket
import sys
from pathlib import Path
from typing import Any

# The package this file ships in must be importable by Unbound's interpreter, which starts
# without site-packages (Py_NoSiteFlag): for a regular install, the directory holding
# `resolver/` is the site-packages directory itself (addsitedir also reads its .pth files);
# dependencies installed elsewhere come from PYTHONPATH in Unbound's environment.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    site.addsitedir(_ROOT)

from resolver.config import load_config, load_default_config  # noqa: E402
from resolver.plugins.engine import BlockReply, PluginEngine, plugin_settings  # noqa: E402

# Inside Unbound: python3-unbound's unboundmodule.py over Unbound's built-in _unboundmodule.
# Imported anywhere else (tests, tools) the glue below is never called.
ub: Any = importlib.import_module("unboundmodule") if "unboundmodule" in sys.modules else None

CONFIG_ENV = "BLOKIR_CONFIG"
_EDE_OPTION = 15  # RFC 8914 section 2: the OPTION-CODE
_CLASS_IN = 1
# Unbound keeps an RRset's type in network byte order: compared as stored, no ntohs per RRset.
_CHAIN_TYPES_WIRE = (socket.htons(5), socket.htons(39))  # CNAME, DNAME
_RD = 0x0100  # in qstate.query_flags (host order)
_NXDOMAIN, _REFUSED = 3, 5

_engine: PluginEngine | None = None


class _UnboundLog(logging.Handler):
    """The engine's log lines into Unbound's log (syslog or its logfile)."""

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.levelno >= logging.ERROR:
            ub.log_err(text)
        else:
            ub.log_info(text)


def init_standard(id: int, env: Any) -> bool:
    global _engine
    logger = logging.getLogger("blokir")
    if not any(isinstance(h, _UnboundLog) for h in logger.handlers):
        logger.addHandler(_UnboundLog())
        logger.setLevel(logging.INFO)
    path = os.environ.get(CONFIG_ENV)
    config = load_config(path) if path else load_default_config()
    _engine = PluginEngine(plugin_settings(config))
    index = _engine.index
    ub.log_info(
        f"blokir: plugin ready: index {index.path} ({index.count} names), config {config.source}"
    )
    return True


def deinit(id: int) -> bool:
    if _engine is not None:
        _engine.write_textfile()  # the last counts before Unbound stops or reloads
    return True


def inform_super(id: int, qstate: Any, superqstate: Any, qdata: Any) -> bool:
    return True


def operate(id: int, event: int, qstate: Any, qdata: Any) -> bool:
    engine = _engine
    if event == ub.MODULE_EVENT_NEW or event == ub.MODULE_EVENT_PASS:
        qinfo = qstate.qinfo
        if engine is not None and qinfo.qclass == _CLASS_IN:
            reply = engine.decide(qinfo.qname, qinfo.qtype)
            if reply is not None and _for_a_client(qstate):
                _answer(id, qstate, reply, engine)
                return True
        qstate.set_ext_state(id, ub.MODULE_WAIT_MODULE)
        return True
    if event == ub.MODULE_EVENT_MODDONE:
        msg = qstate.return_msg
        rep = None if msg is None else msg.rep
        if engine is not None and rep is not None:
            names = _chain_names(rep, qstate)
            if names and _for_a_client(qstate):
                qinfo = qstate.qinfo
                reply = engine.decide_chain(names, qinfo.qtype)
                if reply is not None:
                    ub.invalidateQueryInCache(qstate, qinfo)  # the iterator cached the chain
                    _answer(id, qstate, reply, engine)
                    return True
        qstate.set_ext_state(id, ub.MODULE_FINISHED)
        return True
    qstate.set_ext_state(id, ub.MODULE_ERROR)
    return True


def _for_a_client(qstate: Any) -> bool:
    """A query a client asked (or a prefetch of one: RD set), not one the iterator makes for
    itself (nameserver addresses: RD clear, no client waiting). Blocking those would send the
    iterator to a landing address, or fail every zone served by a listed nameserver."""
    return bool(qstate.query_flags & _RD) or qstate.mesh_info.reply_list is not None


def _chain_names(rep: Any, qstate: Any) -> list[bytes]:
    """The names an answer's CNAME/DNAME chain passes through (owners after the question and
    targets), in wire form. An answer without a CNAME or DNAME has no chain: its RRsets are the
    question's own (Unbound's iterator drops answer RRsets that are off the chain from the
    question, and a record for another name without one would not redirect the client anyway),
    so for most answers only each RRset's type is read: every attribute read through Unbound's
    Python API builds a wrapper object, and this runs on every cache miss."""
    count = rep.an_numrrsets
    if not count:
        return []  # NXDOMAIN or NODATA
    rrsets = rep.rrsets  # a wrapper object per access: once, not once per RRset
    keys = [rrsets[i].rk for i in range(count)]
    if not any(key.type in _CHAIN_TYPES_WIRE for key in keys):
        return []
    names: list[bytes] = []
    first = qstate.qinfo.qname.lower()
    for i, key in enumerate(keys):
        owner = key.dname
        if owner.lower() != first:
            names.append(owner)
        if key.type in _CHAIN_TYPES_WIRE:
            data = rrsets[i].entry.data
            for j in range(data.count):
                names.append(data.rr_data[j][2:])  # RDATA after its length: the target name
    return names


def _answer(id: int, qstate: Any, reply: BlockReply, engine: PluginEngine) -> None:
    qinfo = qstate.qinfo
    if reply.ede:
        ub.edns_opt_list_append(
            qstate.edns_opts_front_out, _EDE_OPTION, bytearray(reply.ede), qstate.region
        )
    if reply.rcode == _REFUSED:  # no records: Unbound encodes the bare RCODE
        qstate.return_rcode = ub.RCODE_REFUSED
        qstate.set_ext_state(id, ub.MODULE_FINISHED)
        engine.count(reply)
        return
    owner = qinfo.qname_str
    msg = ub.DNSMessage(owner, qinfo.qtype, qinfo.qclass, ub.PKT_QR | ub.PKT_RA)
    msg.answer, msg.authority = reply.records(owner)
    if not msg.set_return_msg(qstate):
        qstate.set_ext_state(id, ub.MODULE_ERROR)
        return
    rep = qstate.return_msg.rep
    if reply.rcode == _NXDOMAIN:
        # The builder's flags carry no RCODE; with return_rcode NXDOMAIN Unbound would encode
        # an error answer without the SOA, which RFC 2308 negative caching needs.
        rep.flags = (rep.flags & ~0xF) | _NXDOMAIN
    ub.storeQueryInCache(qstate, qinfo, rep, 0)
    qstate.return_rcode = ub.RCODE_NOERROR
    qstate.set_ext_state(id, ub.MODULE_FINISHED)
    engine.count(reply)
