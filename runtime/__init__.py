# SPDX-License-Identifier: GPL-3.0-or-later
"""The add-on's work inside Blender: ``bpy``, but no operators or panels.

* :mod:`.session`: the session's worker and job queue, the scenes a job belongs to;
* :mod:`.generation`: a generation built from the scene, and its finish (history, import);
* :mod:`.segmentation` and :mod:`.matte`: Auto Masks, Refine Masks and Matte jobs and what they bring;
* :mod:`.follow`: the timer pumping the queue, progress, and each task's finisher;
* :mod:`.farm`: Send to Farm (a bundle written by the backend's command line, its history entry);
* :mod:`.result_plan` and :mod:`.result_create`: importing a result as a strip or a camera plane;
* :mod:`.setup`: the backend check, setting up the backend, the weights check.

Layers point one way: ``follow`` -> ``generation``, ``segmentation`` -> ``session``.
"""
