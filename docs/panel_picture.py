"""Draw docs/images/panel.png, the 3D Viewport sidebar's SCAIL tab, from the panels' real draw code.

    make demo  # optional: the History panel then shows the demo's finished job
    .venvs/blender/bin/python docs/panel_picture.py

Blender as a module draws no interface. So, in Blender's Python: enable this checkout as the `scail2` extension in a
scratch user folder, open build/demo/demo.blend (else set up the demo's scene; nothing is generated) and call each
3D Viewport SCAIL panel's `draw` with `Recorder`, a `UILayout` stand-in that keeps the layout tree and each button's
text as Blender resolves it, into build/panel_picture/panel.json. Then, in the backend's Python (it has Pillow), lay
the tree out as Blender does and paint it in Blender's theme colours and fonts. Also copies the demo's contact sheet.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK, DEMO = os.path.join(REPO, "build", "panel_picture"), os.path.join(REPO, "build", "demo")
TREE, IMAGES = os.path.join(WORK, "panel.json"), os.path.join(REPO, "docs", "images")
REGION_W, U, S = 320, 20, 2  # sidebar width and UI unit in pixels at scale 1; the picture's scale

# 1. Record, in Blender's Python.

CONTAINERS = {"row": ("align", "heading"), "column": ("align", "heading"), "box": (), "split": ("factor", "align"),
              "column_flow": ("columns", "align"), "grid_flow": ("row_major", "columns", "", "", "align")}
LEAVES = {"label": ("text", "icon"), "separator": ("factor",), "progress": ("factor", "type", "text"),
          "template_icon": ("icon_value", "scale"), "operator": ("idname", "text", "icon")}
_ICON_PATHS = {}  # image file -> preview icon id, for template_icon


class Recorder:
    """Stand-in for ``UILayout``: layouts become nodes with ``kids``, buttons leaves saying how they look."""

    def __init__(self, node, ctx, split=False, heading=""):
        object.__setattr__(self, "_n", node)
        object.__setattr__(self, "_s", {"ctx": ctx, "split": split, "heading": heading})

    def __setattr__(self, name, value):  # active, enabled, scale_y, use_property_split...: kept on the node
        self._n[name] = value
        if name == "use_property_split":
            self._s["split"] = value

    def _add(self, t, **node):
        self._n["kids"].append(dict(node, t=t))
        return self._n["kids"][-1]

    def __getattr__(self, name):  # layouts, labels, operators...; any other function becomes a plain button
        def call(*args, **kw):
            import bpy
            if name == "prop_search":  # a search field, shown like the property's own
                return self.prop(*args[:2], **kw)
            kw.update(zip(CONTAINERS.get(name, LEAVES.get(name, ())), args))
            if name in CONTAINERS:
                node = self._add("column" if "flow" in name else name, kids=[], align=kw.get("align", False),
                                 factor=kw.get("factor", 0.0))
                return Recorder(node, self._s["ctx"], self._s["split"], kw.get("heading", ""))
            if name == "operator":  # its label unless given a text
                module, op = kw.pop("idname").split(".")
                op = getattr(getattr(bpy.ops, module), op)
                kw["text"], kw["ok"] = op.get_rna_type().name if kw.get("text") is None else kw["text"], op.poll()
            if name == "progress":  # a bar, drawn as a slider
                kw.update(style="numslider", fill=kw.get("factor", 0.0))
            kw["path"] = next((p for p, i in _ICON_PATHS.items() if i == kw.get("icon_value")), "")
            self._add(name, **{k: v for k, v in kw.items() if isinstance(v, (str, int, float))})
            return types.SimpleNamespace()  # takes an operator's properties
        return call

    def prop(self, data, property, text=None, icon='NONE', expand=False, slider=False, toggle=-1, icon_only=False,
             **_):
        """A property's widget: ``style`` (a theme widget), ``text`` in it, and ``label`` for the label column."""
        import bpy
        rna, value, split = data.bl_rna.properties[property], getattr(data, property), self._s["split"]
        name, heading, self._s["heading"] = rna.name if text is None else text, self._s["heading"], ""
        leaf = self._add("prop", icon=icon, split=split, label=name or None, align="l")
        if rna.type == 'BOOLEAN':
            toggle = toggle == 1 or icon_only or not name and icon != 'NONE'
            leaf.update(style="toggle" if toggle else "option", text=name, sel=bool(value), align="m",
                        label=heading if split and not toggle else None)  # a checkbox keeps its name
        elif rna.type == 'ENUM':
            leaf.update(style="radio" if expand else "menu",  # expanded: the chosen item's button only
                        text=bpy.types.UILayout.enum_item_name(data, property, value), sel=expand)
        elif rna.type in ('INT', 'FLOAT'):  # named inside the field unless split
            system, span, named = self._s["ctx"].scene.unit_settings.system, rna.soft_max - rna.soft_min, not split
            number = str(value) if rna.type == 'INT' else "{:.{}f}".format(value, rna.precision) \
                if rna.unit != 'LENGTH' else bpy.utils.units.to_string(system, 'LENGTH', value)
            number += {'PIXEL': " px", 'PERCENTAGE': " %"}.get(rna.subtype, "")
            leaf.update(style="numslider" if slider or rna.subtype in ('FACTOR', 'PERCENTAGE') else "num",
                        text=name if named else number, right=number if named else "", align="l" if named else "m",
                        label=None if named else leaf["label"], fill=(value - rna.soft_min) / span if span else 0)
        elif rna.type == 'STRING':
            leaf.update(style="text", text=value, folder=rna.subtype in ('FILE_PATH', 'DIR_PATH'))
        else:  # a pointer: an ID search field
            kind = {'Object': 'OBJECT_DATA', 'Collection': 'OUTLINER_COLLECTION'}.get(rna.fixed_type.identifier, 'ID')
            leaf.update(style="text", text=getattr(value, "name", ""), icon=icon if icon != 'NONE' else kind)
        return leaf

    def template_list(self, listtype_name, list_id, dataptr, propname, active_dataptr, active_propname, rows=5,
                      **_):
        import bpy
        items, ctx = [], self._s["ctx"]
        for index, item in enumerate(getattr(dataptr, propname)):
            items.append({"t": "row", "kids": [], "align": False})
            getattr(bpy.types, listtype_name).draw_item(types.SimpleNamespace(), ctx, Recorder(items[-1], ctx),
                                                        dataptr, item, 0, active_dataptr, active_propname, index)
        self._add("list", items=items, active=getattr(active_dataptr, active_propname), rows=max(rows, len(items)))


def theme_colours(theme):
    """The theme's panel and widget colours (RGBA, 0-255) and the widgets' roundness."""
    def rgba(colour):
        return [round(v * 255) for v in colour] + [255] * (4 - len(colour))
    ui = theme.user_interface
    colours = {k: rgba(getattr(ui, k)) for k in ("panel_back", "panel_sub_back", "panel_title", "panel_text")}
    colours["region"] = rgba(theme.regions.sidebars.back)[:3] + [255]  # opaque: no viewport behind it here
    for name in ("tool", "toggle", "option", "menu", "num", "numslider", "text", "box", "list_item", "radio"):
        wcol = getattr(ui, "wcol_" + name)
        colours[name] = dict({k: rgba(getattr(wcol, k)) for k in ("inner", "inner_sel", "outline", "item", "text",
                                                                    "text_sel")}, round=wcol.roundness)
    return colours


def record():
    os.environ["BLENDER_USER_RESOURCES"] = os.path.join(WORK, "blender-user")  # before bpy starts
    sys.path.insert(0, os.path.join(REPO, "demo"))
    import blender_demo as demo
    import bpy

    addon = demo.enable_addon()
    if os.path.isfile(os.path.join(DEMO, "demo.blend")):  # the demo's scene after its run
        bpy.ops.wm.open_mainfile(filepath=os.path.join(DEMO, "demo.blend"))
        scene = bpy.data.scenes["SCAIL-2 demo"]
    else:
        scene, camera, dancers = demo.build_scene()
        demo.set_up_job(scene, camera, dancers, DEMO, None)
    demo.configure(addon, DEMO, os.environ.get("SCAIL2_WEIGHTS") or None)
    with contextlib.suppress(RuntimeError):  # the Setup panel says why
        bpy.ops.scail2.check_backend()
    # Background Blender makes no preview icons (their id is 0): give thumbnails an id, as the interface would.
    common = sys.modules[demo.ADDON + ".panels.common"]
    common.thumbnail_icon = lambda path, real=common.thumbnail_icon: real(path) or os.path.isfile(path) and \
        _ICON_PATHS.setdefault(path, len(_ICON_PATHS) + 1)
    ctx = types.SimpleNamespace(scene=scene, sequencer_scene=scene, region=types.SimpleNamespace(width=REGION_W),
                                preferences=bpy.context.preferences, window_manager=bpy.context.window_manager)
    panels = sorted((c for c in sys.modules[demo.ADDON + ".panels"].classes
                     if getattr(c, "bl_space_type", "") == 'VIEW_3D' and c.bl_region_type == 'UI'),
                    key=lambda c: getattr(c, "bl_order", 0))

    def shown(cls, parent):
        return getattr(cls, "bl_parent_id", "") == parent and (not hasattr(cls, "poll") or cls.poll(ctx))

    def drawn(cls):
        root = {"t": "column", "kids": [], "align": False, "root": True}
        cls.draw(types.SimpleNamespace(layout=Recorder(root, ctx)), ctx)
        return {"label": cls.bl_label, "closed": 'DEFAULT_CLOSED' in getattr(cls, "bl_options", ()), "layout": root,
                "children": [drawn(c) for c in panels if shown(c, getattr(cls, "bl_idname", "") or cls.__name__)]}

    with bpy.context.temp_override(scene=scene):
        tree = {"panels": [drawn(c) for c in panels if shown(c, "")],
                "colours": theme_colours(bpy.context.preferences.themes[0]),
                "fonts": bpy.utils.system_resource('DATAFILES', path="fonts")}
    bpy.ops.preferences.addon_disable(module=demo.ADDON)
    with open(TREE, "w", encoding="utf-8") as f:
        json.dump(tree, f, indent=1)


# 2. Render, with Pillow. Sizes are in interface pixels at scale 1.

FULL, HEADER_H, PAD_X, MARGIN = (True,) * 4, 24, 8, 6  # FULL: all corners rounded (top left, top right...)
FONTS = ("Inter.woff2", "NotoSansSymbols2-Regular.woff2", "NotoSansSymbols-VariableFont_wght.woff2")
ICONS = {  # Blender's icons as characters of its fonts (the digit: which of FONTS); the others become squares
    'CHECKMARK': "\u27130", 'ERROR': "\u26a01", 'INFO': "\u24d82", 'ADD': "+0", 'REMOVE': "\u22120", 'X': "\u27151",
    'CANCEL': "\u22970", 'PLAY': "\u25b61", 'FILE_FOLDER': "\U0001f5c01", 'EXPORT': "\u21e70", 'IMPORT': "\u29130",
    'TRASH': "\U0001f5d11", 'PREFERENCES': "\u26992", 'FILE_REFRESH': "\u21bb0", 'IMAGE_RGB': "\U0001f5bc1",
    'DOT': "\u20220", 'OBJECT_DATA': "\u25bd1", 'OUTLINER_COLLECTION': "\u25a31", 'SORTTIME': "\u23f21"}


def _fade(colour, dim):
    """The colour half as opaque when its layout is inactive or disabled (Blender greys such buttons out)."""
    return (*colour[:3], colour[3] // 2 if dim else colour[3])


def _part(corners, i, count, vertical):
    """The corners that the i-th of ``count`` aligned items keeps of its layout's ``corners``."""
    first, last = i == 0, i == count - 1
    keep = (first, first, last, last) if vertical else (first, last, last, first)
    return tuple(c and k for c, k in zip(corners, keep))


def _icon_only(n):
    """Whether Blender gives the item one unit in a row (a lone icon), not a share of the rest."""
    kids = n.get("kids", n.get("items"))
    return all(map(_icon_only, kids)) if kids else not n.get("text") and n.get("icon", 'NONE') != 'NONE'


class Painter:
    """Lays the recorded tree out, keeping the drawing calls in ``ops`` to paint once the height is known."""

    def __init__(self, tree):
        from PIL import ImageFont
        self.tree, self.c, self.ops = tree, tree["colours"], []
        self.fonts = [ImageFont.truetype(os.path.join(tree["fonts"], f), size * S)  # the interface's, the icons'
                      for f, size in [(FONTS[0], 11), *((f, 13) for f in FONTS)]]

    def rect(self, x, y, w, h, fill, outline=None, radius=4, corners=FULL, at=None):
        box, outline = [x * S, y * S, (x + w) * S - 1, (y + h) * S - 1], outline and tuple(outline)
        self.ops.insert(len(self.ops) if at is None else at, lambda d, img: w > 0 and d.rounded_rectangle(
            box, radius * S, fill=tuple(fill), outline=outline, corners=corners))

    def text(self, x, y, w, h, text, colour, align="l", font=0):
        """Text in the box, clipped in the middle as Blender does; align "c" centres a symbol by its ink."""
        full, font = text, self.fonts[font]
        for keep in range(len(full) - 1, 0, -1):
            if font.getlength(text) <= w * S:
                break
            text = full[:(keep + 1) // 2] + "\u2026" + full[len(full) - keep // 2:]
        at, anchor = ({"l": x, "m": x + w / 2, "r": x + w, "c": x + w / 2}[align] * S, (y + h / 2) * S), align + "m"
        if align == "c":  # the symbol fonts sit high
            box = font.getbbox(text, anchor="mm")
            at, anchor = (at[0] - (box[0] + box[2]) / 2, at[1] - (box[1] + box[3]) / 2), "mm"
        ink = tuple(round(b + (a - b) * colour[3] / 255) for a, b in zip(colour, self.c["panel_back"][:3]))
        self.ops.append(lambda d, img: d.text(at, text, font=font, fill=ink, anchor=anchor))  # Pillow: opaque text

    def icon(self, name, x, y, h, colour):
        """An icon in the unit-wide cell at x; returns the cell's width (0 for no icon)."""
        char = ICONS.get(name, "\u25aa0")  # others: a faint square
        if name not in ('NONE', 'BLANK1'):
            self.text(x, y, U, h, char[0], _fade(colour, char[0] == "\u25aa"), "c", 1 + int(char[1]))
        return 0 if name == 'NONE' else U

    def button(self, wc, x, y, w, h, text, icon, corners, dim, sel=False, align="m", pad_r=4):
        self.rect(x, y, w, h, _fade(wc["inner_sel" if sel else "inner"], dim), _fade(wc["outline"], dim),
                  wc["round"] * U / 2, corners)
        colour = _fade(wc["text_sel" if sel else "text"], dim)
        size = (20 if icon != 'NONE' else 0) + self.fonts[0].getlength(text) / S
        start = x + max(4, (w - size) / 2) if align == "m" else x + 4
        start += self.icon(icon, start - 2, y, h, colour)
        self.text(start, y, x + w - pad_r - start, h, text, colour)

    def widget(self, n, x, y, w, h, corners, dim):
        """A property or operator button, after its label column (right-aligned when property split)."""
        c, text = self.c, _fade(self.c["panel_text"], dim)
        if n.get("label") is not None:
            self.text(x, y, round(w * .4) - 8, h, n["label"], text, "r" if n["split"] else "l")
            x, w = x + round(w * .4), w - round(w * .4)
        style, field = n.get("style", "tool"), w - U * bool(n.get("folder"))
        if style == "option":  # a checkbox and its name
            self.rect(x + 2, y + (h - 14) / 2, 14, 14, _fade(c["option"]["inner_sel" if n["sel"] else "inner"], dim))
            self.icon('CHECKMARK' if n["sel"] else 'NONE', x - 1, y, h, _fade(c["option"]["item"], dim))
            return self.text(x + 22, y, w - 22, h, n["text"], text)
        mark = len(self.ops)
        self.button(c[style], x, y, field, h, n.get("text", n["t"]), n.get("icon", 'NONE'),
                    _part(corners, 0, 1 + (field < w), False), dim or not n.get("ok", True), n.get("sel", False),
                    n.get("align", "m"), 18 if style == "menu" else 4)
        self.rect(x, y, w * min(1, max(0, n.get("fill", 0))) * (style == "numslider"), h, c[style]["item"], None, 4,
                  corners, at=mark + 1)  # a slider's fill, under its text
        self.text(x + w / 2, y, w / 2 - 6, h, n.get("right", ""), _fade(c[style]["text"], dim), "r")
        if style == "menu":  # the chevron
            self.text(x + w - U, y - 3, U, h, "\u2304", text, "m", 1)
        if field < w:  # a path's file browser button
            self.button(c["tool"], x + field, y, U, h, "", 'FILE_FOLDER', _part(corners, 1, 2, False), dim)

    def lay(self, n, x, y, w, corners=FULL, dim=False, sy=1.0):
        """Adds the drawing of node ``n`` at (x, y), ``w`` wide; returns its height."""
        dim = dim or n.get("active") is False or n.get("enabled") is False
        t, kids, sy, c, mark = n["t"], n.get("kids", []), n.get("scale_y", sy), self.c, len(self.ops)
        if t in ("box", "list"):  # a list: a box of rows, the active one highlighted
            pad, blank = (5, []) if t == "box" else (2, [{"t": "separator", "factor": 1 / .3}] * n["rows"])
            rows = kids if t == "box" else (n["items"] + blank)[:n["rows"]]
            h = self.lay({"t": "column", "kids": rows, "align": t == "list"}, x + pad, y + pad, w - 2 * pad,
                         FULL, dim, sy) + 2 * pad
            self.rect(x, y, w, h, c["box"]["inner"], c["box"]["outline"], at=mark)
            if t == "list":
                self.rect(x + 2, y + 2 + n["active"] * U, w - 4, U, c["list_item"]["inner_sel"], None, 3, at=mark + 1)
            return h + 6 * (t == "list")
        if t == "column":
            at, space = y, 0 if n["align"] else 6 if n.get("root") else 2
            for i, kid in enumerate(kids):
                at += space + self.lay(kid, x, at, w, _part(corners, i, len(kids), True) if n["align"] else FULL,
                                       dim, sy)
            return max(0, at - y - space)
        if t in ("row", "split"):
            first = kids[0] if kids else {}
            if t == "row" and len(kids) > 1 and first.get("split") and first.get("label"):
                # Blender's property split in a row: the first item's label column spans the row.
                self.text(x, y, round(w * .4) - 8, U * sy, first["label"], _fade(c["panel_text"], dim), "r")
                x, w, kids = x + round(w * .4), w - round(w * .4), [dict(first, label=None)] + kids[1:]
            space, count = 0 if n["align"] else 8 if t == "split" else 4, len(kids)
            small = [t == "row" and _icon_only(k) for k in kids]
            free = w - space * (count - 1) - U * sum(small)
            widths = [U if one else free / (count - sum(small)) for one in small]
            if t == "split" and n["factor"] and count > 1:  # the first column takes the factor, the others the rest
                widths = [free * n["factor"]] + [free * (1 - n["factor"]) / (count - 1)] * (count - 1)
            return max([0] + [self.lay(kid, x + sum(widths[:i]) + space * i, y, widths[i],
                                       _part(corners, i, count, False) if n["align"] else FULL, dim, sy)
                              for i, kid in enumerate(kids)])
        h = {"separator": .3 * U * n.get("factor", 1), "template_icon": U * n.get("scale", 1)}.get(t, U * sy)
        if t == "label":
            at = x + self.icon(n.get("icon", 'NONE'), x, y, h, _fade(c["panel_text"], dim))
            self.text(at + 2, y, x + w - at - 2, h, n.get("text", ""), _fade(c["panel_text"], dim))
        elif t == "template_icon" and os.path.isfile(n["path"]):  # a preview, fitted in a square and centred
            from PIL import Image, ImageOps
            image = ImageOps.contain(Image.open(n["path"]).convert("RGBA"), (round(min(w, h) * S),) * 2)
            at = (round((x + w / 2) * S - image.width / 2), round((y + h / 2) * S - image.height / 2))
            self.ops.append(lambda d, img: img.paste(image, at))
        elif t not in ("separator", "template_icon"):  # properties, operators and any other button
            self.widget(n, x, y, w, h, corners, dim)
        return h

    def panel(self, p, x, y, w, sub=False):
        """A panel: its header with the open / closed arrow and title, its layout, its child panels."""
        c, mark, at = self.c, len(self.ops), y + HEADER_H
        self.text(x + 4, y, 14, HEADER_H, "\u25b6" if p["closed"] else "\u25bc", c["panel_title"], "m")
        self.text(x + 22, y, w - 44, HEADER_H, p["label"], c["panel_title"])
        if not p["closed"]:
            at += 2 + self.lay(p["layout"], x + PAD_X, at + 2, w - 2 * PAD_X) + 8
            for kid in p["children"]:
                at += self.panel(kid, x, at, w, True)
        self.rect(x, y, w, at - y, c["panel_sub_back" if sub else "panel_back"], None, 0 if sub else 5, at=mark)
        return at - y


def render():
    from PIL import Image, ImageDraw
    with open(TREE, encoding="utf-8") as f:
        painter = Painter(json.load(f))
    height = MARGIN
    for p in painter.tree["panels"]:
        height += painter.panel(p, MARGIN, height, REGION_W - 2 * MARGIN) + MARGIN
    img = Image.new("RGB", (REGION_W * S, round(height * S)), tuple(painter.c["region"][:3]))
    draw = ImageDraw.Draw(img, "RGBA")  # blends colours with alpha into the RGB picture
    for op in painter.ops:
        op(draw, img)
    img.save(os.path.join(IMAGES, "panel.png"), optimize=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--render"]:
        sys.exit(render())
    os.makedirs(WORK, exist_ok=True)
    os.makedirs(IMAGES, exist_ok=True)
    record()
    subprocess.run([os.path.join(REPO, ".venvs", "backend", "bin", "python"), os.path.abspath(__file__), "--render"],
                   check=True)
    if os.path.isfile(os.path.join(DEMO, "contact_sheet.png")):
        shutil.copyfile(os.path.join(DEMO, "contact_sheet.png"), os.path.join(IMAGES, "demo_contact_sheet.png"))
