# SPDX-License-Identifier: GPL-3.0-or-later
"""Where a finished job goes in a scene: the sequencer channel, the overlay's scale, the camera's view, a plane's size.

Standard library only and no ``bpy``: plain geometry that ``runtime/result_plan.py`` (and Auto
Masks' strips) feed with what they read from the scene. `core.results` re-exports these names.
"""

MAX_CHANNEL = 128  # channels of the Video Sequencer


def free_channel(occupied, lowest, start, end, max_channel=MAX_CHANNEL):
    """The lowest channel >= ``lowest`` where nothing overlaps scene frames [start, end); None if none.

    ``occupied``: (channel, first frame, end frame) of the strips already there.
    """
    busy = set()
    for channel, first, last in occupied:
        if first < end and last > start:
            busy.add(channel)
    for channel in range(max(1, lowest), max_channel + 1):
        if channel not in busy:
            return channel
    return None


def overlay_scale(footage_width, footage_height, width, height):
    """Scale of a generated frame relative to the footage it was cut from.

    The backend scales the footage to cover width x height and crops the centre,
    so one generated pixel spans ``1 / cover`` footage pixels. Multiplying the
    driving strip's scale by the returned value lines the frames up.
    """
    cover = max(height / footage_height, width / footage_width)
    return 1.0 / cover


def camera_view(distance, *, ortho, lens, ortho_scale, sensor_width, sensor_height, sensor_fit,
                resolution_x, resolution_y, pixel_aspect_x=1.0, pixel_aspect_y=1.0,
                shift_x=0.0, shift_y=0.0):
    """The rectangle a camera sees at ``distance`` in front of it: (centre x, centre y, width, height).

    In the camera's own axes and units (x right, y up). As Blender's camera
    (``BKE_camera_params_compute_viewplane``): the sensor (or ortho scale) spans
    the fitted axis, which for 'AUTO' is the longer side of the frame (pixel
    aspect included) and uses the sensor width; 'HORIZONTAL' fits the width to
    the sensor width, 'VERTICAL' the height to the sensor height. Shift moves the
    frame by that many fitted-axis lengths.
    """
    size_x = resolution_x * pixel_aspect_x
    size_y = resolution_y * pixel_aspect_y
    if sensor_fit == 'AUTO':
        horizontal = size_x >= size_y
        sensor = sensor_width
    else:
        horizontal = sensor_fit == 'HORIZONTAL'
        sensor = sensor_width if horizontal else sensor_height
    fitted = ortho_scale if ortho else distance * sensor / lens
    if horizontal:
        width, height = fitted, fitted * size_y / size_x
    else:
        width, height = fitted * size_x / size_y, fitted
    return shift_x * fitted, shift_y * fitted, width, height


def plane_size(view_width, view_height, aspect, fill_mode):
    """(width, height) of an image of ``aspect`` (width / height) that fits in or fills the view.

    'FIT' keeps the whole image inside the frame, 'FILL' covers the frame and
    spills over the other sides (as Image as Planes' camera sizing).
    """
    wider = aspect > view_width / view_height
    if wider == (fill_mode == 'FIT'):
        return view_width, view_width / aspect
    return view_height * aspect, view_height
