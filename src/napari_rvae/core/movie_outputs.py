"""Results of a movie or of many scans, written while the frames stream in.

:class:`MovieWriter` takes one frame's results at a time and appends them to
the files at once, so that its memory does not grow with the number of frames:

- ``points.csv``: ``file`` (several inputs only) and ``frame`` in front of the
  frame's table columns (``y, x``, the encoded columns, ``y_<unit>, x_<unit>``);
  ``points.parquet`` too, with the same columns and dtypes, when there are
  more than :data:`PARQUET_ROWS` rows (or always with ``parquet=True``).
- ``angle_map.tif``, ``class_map.tif``, ... (``<name>_angle_map.tif`` per
  input when there are several): ImageJ stacks (T, Y, X) with the pixel size,
  page ``t`` holding frame ``t``; a 2-D input gives a 2-D map.
- ``frames.csv``: one row per frame (:func:`frame_summary`; ``time_s`` after ``frame`` where the
  file gives the time between frames) and ``frames.png``,
  a figure of it over time (:func:`frames_figure`).

Everything goes into an :class:`~napari_rvae.core.outputs.OutputDir`, so a run
that fails half-way leaves no file behind.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .circstats import circular_mean_spread

__all__ = [
    "PARQUET_ROWS",
    "MovieWriter",
    "frame_summary",
    "frames_figure",
    "map_file_names",
]

PARQUET_ROWS = 2_000_000
POINTS_FILE = "points.csv"
PARQUET_FILE = "points.parquet"
FRAMES_FILE = "frames.csv"
FRAMES_FIGURE_FILE = "frames.png"
MAP_NAMES = ("angle_map", "class_map", "psi_map")
# Rows per chunk when points.csv is converted to Parquet: a few tens of MB, whatever the movie's length.
_CHUNK_ROWS = 250_000
_LEAD = ("file", "frame")


def frame_summary(table: pd.DataFrame, *, period: float, n_classes: int) -> dict:
    """One frame's row of ``frames.csv``.

    Parameters
    ----------
    table : DataFrame
        The frame's results (``angle`` and ``class`` columns where the model gives them).
    period : float
        The angle's period in degrees.
    n_classes : int
        Number of ``class_<k>_fraction`` columns (0 for a model without classes).

    Returns
    -------
    dict
        ``atoms`` (rows), ``angle_mean`` and ``angle_spread`` (degrees: circular
        mean direction in ``[0, period)`` and Mardia's circular standard
        deviation, :func:`circular_mean_spread`), ``class_<k>_fraction`` (share
        of the frame's atoms in class ``k``). Without atoms, or without the
        column, the values are NaN.

    Examples
    --------
    >>> t = pd.DataFrame({"angle": [350.0, 10.0], "class": [0, 1]})
    >>> s = frame_summary(t, period=360.0, n_classes=2)
    >>> s["atoms"], round(s["angle_mean"], 6), s["class_1_fraction"]
    (2, 0.0, 0.5)
    """
    n = len(table)
    mean, spread = (math.nan, math.nan)
    if "angle" in table.columns:
        mean, spread = circular_mean_spread(table["angle"].to_numpy(dtype=np.float64), period)
    row = {"atoms": n, "angle_mean": mean, "angle_spread": spread}
    counts = None
    if n and "class" in table.columns and n_classes > 0:
        codes = pd.to_numeric(table["class"], errors="coerce").to_numpy(dtype=np.float64)
        codes = codes[np.isfinite(codes) & (codes >= 0) & (codes < n_classes)].astype(np.int64)
        counts = np.bincount(codes, minlength=n_classes)
    for k in range(max(int(n_classes), 0)):
        row[f"class_{k}_fraction"] = float(counts[k] / n) if counts is not None else math.nan
    return row


def map_file_names(sources, several_files: bool, map_names=MAP_NAMES) -> dict[tuple[int, str], str]:
    """The TIFF file of each (source index, map name): ``angle_map.tif``, or ``<stem>_angle_map.tif``.

    With several inputs the stem is the source name's stem, made file-safe;
    when two stems coincide (``a.tif`` and ``a.dm3``) the whole names are used.

    Examples
    --------
    >>> class S:
    ...     def __init__(self, name):
    ...         self.name = name
    >>> names = map_file_names([S("a.tif"), S("a.dm3"), S("b.h5/data")], True, ["angle_map"])
    >>> [names[i, "angle_map"] for i in range(3)]
    ['a_tif_angle_map.tif', 'a_dm3_angle_map.tif', 'b_angle_map.tif']
    """
    if not several_files:
        return {(i, m): f"{m}.tif" for i in range(len(sources)) for m in map_names}

    def safe(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "input"

    stems = [safe(Path(str(s.name).split("/")[0]).stem) for s in sources]
    full = [safe(str(s.name)).replace(".", "_") for s in sources]
    chosen = [stems[i] if stems.count(stems[i]) == 1 else full[i] for i in range(len(sources))]
    # Names INPUTS made unique can still meet here after the clean-up: number the rest.
    seen: dict[str, int] = {}
    for i, c in enumerate(chosen):
        seen[c] = seen.get(c, 0) + 1
        if seen[c] > 1:
            chosen[i] = f"{c}_{seen[c]}"
    return {(i, m): f"{chosen[i]}_{m}.tif" for i in range(len(sources)) for m in map_names}


class _MapStack:
    """One map of one input as an ImageJ TIFF, written one page at a time.

    The file is laid out at once for the whole stack (tifffile writes ImageJ
    metadata for a fixed shape, and appended pages could not carry the T
    axis); each page is then written at its offset, so only one frame is ever
    in memory. Pages never given are filled: NaN for a float map, 0 (ImageJ's
    and :func:`~napari_rvae.core.maps.class_map`'s "no atom") for a label map.
    """

    def __init__(self, path: Path, source, dtype):
        import tifffile

        from .readers import _imagej_unit

        self.path = Path(path)
        self.frame_shape = tuple(int(s) for s in source.frame_shape)
        self.n_frames = int(source.n_frames)
        shape = (self.n_frames, *self.frame_shape) if source.is_stack else self.frame_shape
        metadata = {"axes": "TYX" if source.is_stack else "YX"}
        kwargs = {}
        if source.pixel_size is not None and np.isfinite(source.pixel_size) and source.pixel_size > 0:
            kwargs["resolution"] = (1.0 / float(source.pixel_size),) * 2
            if source.unit:
                metadata["unit"] = _imagej_unit(source.unit)
        with warnings.catch_warnings():
            # Over 4 GB tifffile writes the one IFD ImageJ itself writes for large stacks, and says so.
            warnings.filterwarnings("ignore", message=".*truncating ImageJ file", category=UserWarning)
            tifffile.imwrite(self.path, shape=shape, dtype=dtype, imagej=True, metadata=metadata, **kwargs)
        with tifffile.TiffFile(self.path) as tif:
            self.offset = tif.series[0].dataoffset
            self.dtype = np.dtype(dtype).newbyteorder(tif.byteorder)
        if self.offset is None:  # pragma: no cover - tifffile lays out uncompressed stacks contiguously
            raise RuntimeError(f"{self.path.name}: tifffile did not write the stack contiguously.")
        self.fill = np.nan if self.dtype.kind == "f" else 0
        self.next = 0

    def write(self, t: int, page) -> None:
        """Write frame ``t`` (``None``: a filled page), filling the pages skipped before it."""
        if self.next > t:
            return
        fill = np.full(self.frame_shape, self.fill, dtype=self.dtype) if self.next < t or page is None else None
        with open(self.path, "r+b") as fh:
            while self.next <= t:
                self._put(fh, self.next, page if self.next == t and page is not None else fill)
                self.next += 1

    def finish(self) -> None:
        """Fill the pages of the frames never given, so the stack has all its frames."""
        if self.next < self.n_frames:
            self.write(self.n_frames - 1, None)

    def _put(self, fh, t: int, page) -> None:
        arr = np.asarray(page)
        if arr.shape != self.frame_shape:
            raise ValueError(f"{self.path.name}: frame {t} is {arr.shape}, the input's frames {self.frame_shape}.")
        if arr.dtype != self.dtype:
            if self.dtype.kind == "u" and arr.size and (arr.min() < 0 or arr.max() > np.iinfo(self.dtype).max):
                raise ValueError(f"{self.path.name}: frame {t} has values outside {self.dtype.name}.")
            arr = arr.astype(self.dtype)
        fh.seek(self.offset + t * arr.nbytes)
        fh.write(memoryview(np.ascontiguousarray(arr)).cast("B"))  # no bytes copy of the frame


def _tiff_dtype(arr: np.ndarray) -> np.dtype:
    """The ImageJ dtype a map is stored in: float32, uint8 for masks, uint16 for labels."""
    kind = np.asarray(arr).dtype.kind
    if kind == "b":
        return np.dtype(np.uint8)
    if kind in "iu":
        return np.dtype(np.uint16)
    return np.dtype(np.float32)


def _merge_dtype(a, b):
    """One dtype for a column whose frames disagree (an int column with NaN in one frame is float)."""
    if a == b:
        return a
    numeric = pd.api.types.is_numeric_dtype
    boolean = pd.api.types.is_bool_dtype
    if numeric(a) and numeric(b) and not boolean(a) and not boolean(b):
        return np.promote_types(_numpy_dtype(a), _numpy_dtype(b))
    return np.dtype(object)


def _numpy_dtype(dtype) -> np.dtype:
    """A column's dtype as NumPy has it: pandas' nullable numbers (which may hold NA) become float64, text object."""
    if isinstance(dtype, np.dtype):
        return dtype
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        return np.dtype(np.float64)
    return np.dtype(object)


class _PointsStream:
    """``points.csv``, appended frame by frame: the header once, then each frame's rows."""

    def __init__(self, path: Path, lead: tuple[str, ...]):
        self.path = path
        self.lead = lead
        self.columns: list | None = None
        self.dtypes: dict = {}
        self.rows = 0
        self.fh = None

    def write(self, table: pd.DataFrame, lead_values: dict) -> None:
        own = [c for c in table.columns if c not in _LEAD]  # the writer's file/frame are the ones that count
        if self.columns is None:
            if not own and len(table) == 0:
                return  # an empty frame without columns: the header waits for a frame that has them
            self._start(own)
        elif set(own) != set(self.columns):
            raise ValueError(
                f"Frame {lead_values['frame']} has the columns {own}, the frames before it {self.columns}."
            )
        if len(table) == 0:
            return
        df = table[self.columns].reset_index(drop=True)
        for i, name in enumerate(self.lead):
            df.insert(i, name, lead_values[name])
        for c in df.columns:
            dtype = _numpy_dtype(df[c].dtype)
            self.dtypes[c] = _merge_dtype(self.dtypes[c], dtype) if c in self.dtypes else dtype
        df.to_csv(self.fh, header=False, index=False)
        self.rows += len(df)

    def _start(self, own: list) -> None:
        self.columns = list(own)
        self.fh = open(self.path, "w", newline="")  # noqa: SIM115 - kept open across frames, closed by close()
        pd.DataFrame(columns=[*self.lead, *self.columns]).to_csv(self.fh, index=False)

    def close(self) -> None:
        if self.fh is None and self.columns is None:
            self._start([])
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def csv_to_parquet(csv_path, parquet_path, dtypes: dict, *, chunk_rows: int = _CHUNK_ROWS) -> int:
    """Convert a CSV to Parquet chunk by chunk, with the given column dtypes; returns the rows written.

    Memory holds one chunk at a time. Text columns (``dtypes`` neither numeric
    nor bool) become Parquet strings; the others keep their NumPy dtype, so
    reading either file back gives the same table.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(pd.read_csv(csv_path, nrows=0).columns)
    numeric = {c for c in columns if c in dtypes and pd.api.types.is_numeric_dtype(dtypes[c])}
    read = {c: (np.dtype(dtypes[c]) if c in numeric else str) for c in columns}
    fields = [pa.field(c, pa.from_numpy_dtype(np.dtype(dtypes[c])) if c in numeric else pa.string()) for c in columns]
    schema = pa.schema(fields)
    rows = 0
    with pq.ParquetWriter(parquet_path, schema) as writer:
        # Only empty fields are missing: a text value "NA" or "null" stays text, as in the CSV.
        with pd.read_csv(csv_path, dtype=read, chunksize=chunk_rows, keep_default_na=False, na_values=[""]) as reader:
            for chunk in reader:
                writer.write_table(pa.Table.from_pandas(chunk, schema=schema, preserve_index=False))
                rows += len(chunk)
        if rows == 0:
            writer.write_table(schema.empty_table())
    return rows


def _out_path(out, name: str) -> Path:
    """A file's path in an OutputDir (its staging folder), or in a plain folder."""
    return Path(out.path(name)) if hasattr(out, "path") and callable(out.path) else Path(out) / name


class MovieWriter:
    """The results of many frames, written frame by frame into an output folder.

    Parameters
    ----------
    out : OutputDir or path
        Files go to ``out.path(name)``; an OutputDir discards them all if the run fails.
    sources : list of Source
        The inputs (``name``, ``n_frames``, ``frame_shape``, ``pixel_size``, ``unit``, ``is_stack``;
        ``frame_interval_s`` where known).
    several_files : bool
        Several inputs: ``points.csv`` and ``frames.csv`` get a ``file`` column
        and the maps are written per input (``<stem>_angle_map.tif``).
    period : float
        The angle's period in degrees (``360 / symmetry``).
    n_classes : int
        Number of class fraction columns in ``frames.csv`` (0 for a model without classes).
    parquet : bool, optional
        ``True``: also write ``points.parquet``; ``False``: never; ``None``: when
        there are more than :data:`PARQUET_ROWS` rows.
    map_names : sequence of str
        The maps of :attr:`FrameResult.maps` written as TIFF stacks; other maps are ignored.

    Notes
    -----
    What the writer keeps between frames does not grow with their number: open
    files, the points' column names and dtypes, counters. ``points.parquet``
    is converted from ``points.csv`` at :meth:`close`, in chunks, so it has
    exactly the CSV's values and well-sized row groups. ``frames.png`` is
    drawn from ``frames.csv`` (one row per frame) at :meth:`close`.
    """

    def __init__(
        self, out, sources, *, several_files: bool, period: float, n_classes: int, parquet=None, map_names=MAP_NAMES
    ):
        self.sources = list(sources)
        if not several_files and len(self.sources) != 1:
            raise ValueError(f"One input expected without several_files, not {len(self.sources)}.")
        self.out = out
        self.several_files = bool(several_files)
        self.period = float(period)
        self.n_classes = max(int(n_classes), 0)
        self.parquet = parquet
        self.map_names = tuple(map_names)
        self.map_files = map_file_names(self.sources, self.several_files, self.map_names)
        self._timed = any(getattr(s, "frame_interval_s", None) for s in self.sources)
        lead = _LEAD if self.several_files else ("frame",)
        self._points = _PointsStream(_out_path(out, POINTS_FILE), lead)
        self._frames_fh = None
        self._stacks: dict[tuple[int, str], _MapStack] = {}
        self._map_dtypes: dict[str, np.dtype] = {}
        self._last = (-1, -1)
        self.frames_written = 0
        self.dropped = 0  # points left out at the edges, all frames together
        self._closed = False

    @property
    def rows(self) -> int:
        """Rows written to ``points.csv`` so far."""
        return self._points.rows

    def add(self, result) -> None:
        """Write one frame's results (an object with ``source``, ``frame``, ``table``, ``maps``, ``dropped``).

        Frames must come in order: by source, then by frame.
        """
        if self._closed:
            raise ValueError("This MovieWriter is closed.")
        i, t = int(result.source), int(result.frame)
        if not 0 <= i < len(self.sources) or not 0 <= t < int(self.sources[i].n_frames):
            raise ValueError(f"Frame {t} of input {i} is not in the inputs.")
        if (i, t) <= self._last:
            raise ValueError(f"Frame {t} of input {i} came after frame {self._last[1]} of input {self._last[0]}.")
        shape = tuple(int(s) for s in self.sources[i].frame_shape)
        for name, page in (result.maps or {}).items():  # checked before anything of the frame is written
            if name in self.map_names and np.shape(page) != shape:
                raise ValueError(f"{name}: frame {t} is {np.shape(page)}, the input's frames {shape}.")
        lead = {"file": str(self.sources[i].name), "frame": t}
        table = result.table if result.table is not None else pd.DataFrame()
        self._points.write(table, lead)
        self._write_summary(table, lead, self.sources[i].frame_interval_s)
        for name, page in (result.maps or {}).items():
            if name in self.map_names:
                self._stack(i, name, page).write(t, page)
        self.dropped += int(np.asarray(result.dropped).size) if result.dropped is not None else 0
        self._last = (i, t)
        self.frames_written += 1

    def _stack(self, i: int, name: str, page=None) -> _MapStack:
        """The TIFF of map ``name`` of input ``i``, laid out on first use."""
        key = (i, name)
        if key not in self._stacks:
            dtype = self._map_dtypes.setdefault(name, _tiff_dtype(page))
            self._stacks[key] = _MapStack(_out_path(self.out, self.map_files[key]), self.sources[i], dtype)
        return self._stacks[key]

    def _write_summary(self, table: pd.DataFrame, lead: dict, interval_s: float | None) -> None:
        row = frame_summary(table, period=self.period, n_classes=self.n_classes)
        head = {"file": lead["file"]} if self.several_files else {}
        head["frame"] = lead["frame"]
        if self._timed:  # where the file says the time between frames (NaN for an input that does not)
            head["time_s"] = lead["frame"] * interval_s if interval_s else math.nan
        df = pd.DataFrame([{**head, **row}])
        if self._frames_fh is None:
            self._frames_fh = open(_out_path(self.out, FRAMES_FILE), "w", newline="")  # noqa: SIM115 - closed by close()
            df.to_csv(self._frames_fh, index=False)
        else:
            df.to_csv(self._frames_fh, header=False, index=False)

    def close(self) -> list[str]:
        """Finish every file (fill the maps' missing frames, Parquet, ``frames.png``); returns the file names.

        A map that any frame had is written for every input, so that all
        inputs have the same files.
        """
        if self._closed:
            raise ValueError("This MovieWriter is closed.")
        self._closed = True
        self._points.close()
        files = [POINTS_FILE]
        rows = self._points.rows
        if self.parquet or (self.parquet is None and rows > PARQUET_ROWS):
            csv_to_parquet(
                self._points.path, _out_path(self.out, PARQUET_FILE), self._points.dtypes, chunk_rows=_CHUNK_ROWS
            )
            files.append(PARQUET_FILE)
        for name in (n for n in self.map_names if n in self._map_dtypes):
            for i in range(len(self.sources)):
                self._stack(i, name).finish()
                files.append(self.map_files[i, name])
        if self._frames_fh is not None:
            self._frames_fh.close()
            self._frames_fh = None
            files.append(FRAMES_FILE)
            frames = pd.read_csv(_out_path(self.out, FRAMES_FILE), dtype={"file": str})
            fig = frames_figure(frames, period=self.period)
            fig.savefig(_out_path(self.out, FRAMES_FIGURE_FILE))
            files.append(FRAMES_FIGURE_FILE)
        return files

    def abort(self) -> None:
        """Close the open files without finishing them (the OutputDir then discards them)."""
        self._closed = True
        self._points.close()
        if self._frames_fh is not None:
            self._frames_fh.close()
            self._frames_fh = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            if not self._closed:
                self.close()
        else:
            self.abort()
        return False


def frames_figure(frames: pd.DataFrame, *, period: float):
    """``frames.png``: the angle's circular mean +/- spread and the class fractions over the frames.

    Parameters
    ----------
    frames : DataFrame
        ``frames.csv``'s table (:func:`frame_summary` rows with ``frame`` and, for several inputs, ``file``).
    period : float
        The angle's period in degrees (the angle axis spans ``[0, period)``).

    Returns
    -------
    matplotlib.figure.Figure
        Two panels sharing the x axis (one when there are no class columns; the
        x axis in seconds where ``frames`` has ``time_s`` for every frame of one input),
        with an Agg canvas (``fig.savefig`` works without pyplot). Several
        inputs share the panels: the x axis runs through all frames in order
        and dotted lines mark where each input starts, named when there are few.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    class_cols = [c for c in frames.columns if re.fullmatch(r"class_\d+_fraction", str(c))]
    several = "file" in frames.columns and frames["file"].nunique() > 1
    x = np.arange(len(frames)) if several else frames["frame"].to_numpy()
    timed = not several and "time_s" in frames.columns and np.isfinite(frames["time_s"].to_numpy(dtype=float)).all()
    if timed:
        x = frames["time_s"].to_numpy(dtype=float)
    fig = Figure(figsize=(7, 5.5 if class_cols else 3.2), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2 if class_cols else 1, 1, sharex=True, squeeze=False)[:, 0]
    mean = frames["angle_mean"].to_numpy(dtype=float)
    # An infinite spread (angles that cancel) is drawn as the whole circle.
    spread = np.minimum(frames["angle_spread"].to_numpy(dtype=float), period / 2)
    ax = axes[0]
    ax.fill_between(x, mean - spread, mean + spread, alpha=0.25, linewidth=0, label="± circular SD")
    ax.plot(x, mean, ".-", markersize=3, linewidth=1, label="circular mean")
    ax.set_ylim(0, period)
    ax.set_ylabel(f"angle (°, modulo {period:g})")
    ax.set_title(f"Orientation over {len(frames):,} frames", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    if class_cols:
        for c in class_cols:
            axes[1].plot(x, frames[c].to_numpy(dtype=float), ".-", markersize=3, linewidth=1, label=c.split("_")[1])
        axes[1].set_ylim(0, 1)
        axes[1].set_ylabel("fraction of atoms")
        axes[1].legend(title="class", fontsize=7, title_fontsize=7, loc="upper right", ncols=min(len(class_cols), 6))
    axes[-1].set_xlabel("frame (all inputs in order)" if several else "time (s)" if timed else "frame")
    if several:
        _mark_inputs(axes, frames["file"].astype(str).to_numpy())
    return fig


def _mark_inputs(axes, files: np.ndarray) -> None:
    """Dotted lines where each input's frames start; their names on top when there are few."""
    starts = np.flatnonzero(np.r_[True, files[1:] != files[:-1]])
    for ax in axes:
        for s in starts[1:]:
            ax.axvline(s - 0.5, color="0.5", linestyle=":", linewidth=0.8)
    if len(starts) <= 12:
        top = axes[0].secondary_xaxis("top")
        top.set_xticks(starts, [files[s] for s in starts], fontsize=6, rotation=30, ha="left")
