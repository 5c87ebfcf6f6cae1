# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators of the remote worker: look at its certificate, then trust it (accept once).

Looking connects in a thread (TLS handshake only, no token sent) and a timer writes the
fingerprint it saw into the preferences, where the artist compares it with the one the worker
printed and trusts it, which pins it.
"""

__all__ = (
    "SCAIL2_OT_show_worker_certificate",
    "SCAIL2_OT_trust_worker_certificate",
    "classes",
)

import threading

import bpy
from bpy.types import Operator

from .. import preferences, protocol
from ..core import worker_tls
from ..core.job import parse_address
from ..core.util import one_line
from ..runtime import session

PEEK_TIMEOUT_S = 10.0


class SCAIL2_OT_show_worker_certificate(Operator):
    """Connect to the remote worker and show the fingerprint of its certificate, to compare with the one it printed"""
    bl_idname = "scail2.show_worker_certificate"
    bl_label = "Show Certificate"
    bl_options = {'REGISTER'}

    @classmethod
    def poll(cls, context):
        if not preferences.get_preferences(context).remote_address.strip():
            cls.poll_message_set("Enter the remote worker's address first")
            return False
        return True

    def execute(self, context):
        prefs = preferences.get_preferences(context)
        try:
            host, port = parse_address(prefs.remote_address)
        except ValueError as ex:
            self.report({'ERROR'}, str(ex))
            return {'CANCELLED'}
        refusal = session.remote_refusal(host, port)
        if refusal:
            self.report({'ERROR'}, refusal)
            return {'CANCELLED'}
        prefs.remote_seen_fingerprint = ""
        prefs.remote_certificate_note = "Connecting to " + protocol.wire.address_text(host, port)
        _PEEK.clear()

        def peek():
            try:
                _PEEK["fingerprint"] = worker_tls.peek_fingerprint(host, port, timeout=PEEK_TIMEOUT_S)
            except (OSError, ValueError) as ex:
                _PEEK["error"] = one_line("cannot reach {:s}: {!s}".format(protocol.wire.address_text(host, port), ex))

        _PEEK["thread"] = threading.Thread(target=peek, name="scail2-peek-certificate", daemon=True)
        _PEEK["thread"].start()
        bpy.app.timers.register(land_certificate, first_interval=0.2)
        return {'FINISHED'}


_PEEK = {}  # the look at a certificate under way: its thread, then "fingerprint" or "error"


def land_certificate():
    """Timer: once the look is over, show what it saw in the preferences (None: done; else call again)."""
    thread = _PEEK.get("thread")
    if thread is None:
        return None
    if thread.is_alive():
        return 0.2
    prefs = preferences.get_preferences(bpy.context)
    prefs.remote_seen_fingerprint = _PEEK.get("fingerprint", "")
    prefs.remote_certificate_note = _PEEK.get("error", "")
    _PEEK.clear()
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            area.tag_redraw()
    return None


class SCAIL2_OT_trust_worker_certificate(Operator):
    """Pin the fingerprint shown: the add-on will talk only to a worker with this certificate"""
    bl_idname = "scail2.trust_worker_certificate"
    bl_label = "Trust This Certificate"
    bl_options = {'REGISTER'}

    @classmethod
    def poll(cls, context):
        if not preferences.get_preferences(context).remote_seen_fingerprint:
            cls.poll_message_set("Show the worker's certificate first")
            return False
        return True

    def execute(self, context):
        prefs = preferences.get_preferences(context)
        prefs.remote_fingerprint = prefs.remote_seen_fingerprint
        prefs.remote_seen_fingerprint = ""
        prefs.remote_certificate_note = ""
        self.report({'INFO'}, "Pinned the worker's certificate " + prefs.remote_fingerprint)
        return {'FINISHED'}


classes = (
    SCAIL2_OT_show_worker_certificate,
    SCAIL2_OT_trust_worker_certificate,
)
