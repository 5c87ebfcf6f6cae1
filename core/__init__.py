# SPDX-License-Identifier: GPL-3.0-or-later
"""The add-on's plain logic: standard library only, never ``bpy``; imports nothing of the add-on but ``protocol``.

Everything here runs, and is tested, without Blender:

* :mod:`.job` and :mod:`.queue`: jobs as Blender sees them and the session's queue over one worker
  (its worker's life in :mod:`.connection`, what the worker says in :mod:`.queue_events`);
* :mod:`.worker_client`: the line-JSON connection to a local or remote worker, over a :mod:`.transports`
  transport (:mod:`.process_transport` or :mod:`.socket_transport`);
* :mod:`.inputs` and :mod:`.pixels`: the record of exported inputs and mask pixel work;
* :mod:`.results` and :mod:`.timing`: reading a finished job and which frame each scene frame shows
  (where it goes in the scene: :mod:`.placement`);
* :mod:`.segmentation`: Auto Masks, Refine Masks and Matte jobs;
* :mod:`.setup` and :mod:`.checks`: creating the backend's environment, checking it and the weights;
* :mod:`.util`: one-line messages, atomic files, child processes.
"""
