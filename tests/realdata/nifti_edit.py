"""Edits of a real development scan for the robustness tests, with the
Python standard library only: reads SRC/{water,fat,labels_manual}.nii.gz
(NIfTI-1) and writes the edited copies into DST.

  nifti_edit.py mirror SRC DST   mirror along the first voxel axis; the
                                 manual labels (scheme lpm: 1 ES right, 2 MF
                                 right, 3 MF left, 4 ES left) swap sides
  nifti_edit.py noise SRC DST SIGMA SLICES
                                 Rician-like noise: Gaussian of SIGMA on both
                                 channels of water and fat, magnitude taken,
                                 on the lowest SLICES slices (seeded)
  nifti_edit.py twist SRC DST A0 A1
                                 each slice rotated in-plane about the grid's
                                 centre, by A0 degrees on the first slice to
                                 A1 on the last (linearly; nearest neighbour,
                                 labels included): a spine whose rotation
                                 changes along the stack
  nifti_edit.py fatty SRC DST A  fatty infiltration of the four muscles: in
                                 the manual labels grown by 3 voxels in-plane
                                 (4-neighbour steps), each voxel's muscle
                                 share m = (0.9 - FF) / 0.8 (0..1) turns a
                                 share A of its water into fat (W' = W (1 -
                                 A m), F' = F + W A m): muscle FF rises by
                                 about A (1 - FF), fat and bone stay;
  nifti_edit.py fatty SRC DST A LABEL
                                 the same for one muscle (manual label
                                 LABEL, grown into unlabelled voxels only):
                                 3 = left multifidus, a one-sided atrophy
  nifti_edit.py scale SRC DST F  the in-plane pixel size (pixdim and the
                                 sform's first two columns) times F: the
                                 same image as a subject F times larger
  nifti_edit.py fine SRC DST N   finer in-plane pixels: every voxel split
                                 into N x N of 1/N its size (pixdim, dims
                                 and the sform follow; the same image, the
                                 same labels), as a scanner's zero-filled
                                 interpolation gives
  nifti_edit.py thick SRC DST N  thicker slices: every N slices averaged
                                 into one (the slices left over at the top
                                 dropped); labels by majority, a tie to
                                 the muscle
  nifti_edit.py crop SRC DST I0 I1
                                 the columns I0 .. I1 - 1 only (a field of
                                 view off the body's centre; the sform's
                                 origin follows)
  nifti_edit.py curve SRC DST MM  a spine curved sideways (scoliosis): slice
                                 k shifted along the first voxel axis by
                                 MM sin(pi k / (nz - 1)) mm, rounded to
                                 whole voxels (0 at both ends, MM at the
                                 middle; labels included, zeros shifted in)
  nifti_edit.py rows SRC DST J0 J1
                                 the rows J0 .. J1 - 1 only (second voxel
                                 axis; a tight field of view that cuts the
                                 body in front; the sform's origin follows)
  nifti_edit.py slices SRC DST K0 K1
                                 the slices K0 .. K1 - 1 only (partial
                                 coverage; the sform's origin follows)
  nifti_edit.py tilt SRC DST DEG the same voxels in a stack tilted by DEG
                                 about the left-right axis (the header
                                 only: the voxel-to-world matrix, from the
                                 qform or else the sform, turned about the
                                 world's x axis and written as the sform;
                                 qform_code 0), as an axial stack angled to
                                 the lordosis is stored
  nifti_edit.py swap SRC DST K   water and fat exchanged on slice K only (a
                                 fat/water swap of the reconstruction;
                                 values kept, each file's type kept)
  nifti_edit.py backfat SRC DST T
                                 T mm more subcutaneous fat behind the body
                                 (an obese subject): per column, the voxel
                                 8 mm inside the back's last voxel with
                                 signal (water + fat above a tenth of the
                                 slice's 99th percentile) is repeated T mm
                                 thick there, the rest shifted backwards
  nifti_edit.py thinfat SRC DST T
                                 a lean subject's back: per column, the
                                 subcutaneous fat behind the body (the run
                                 of fat-dominant voxels inward from the
                                 back's last voxel with signal, lean lines
                                 of up to 2 voxels inside it included) cut
                                 to its innermost T mm (the outer part of
                                 the run removed, the skin kept, the back
                                 shifted forwards; the cut per column the
                                 least within 3 columns either side; the
                                 cut of the columns that reach a labelled
                                 muscle, interpolated between them and
                                 tapered over 30 columns beside them, never
                                 more than a column's own fat); labels
                                 unchanged
  nifti_edit.py ipop SRC DST     in-phase and opposed-phase magnitudes
                                 instead of water and fat (IP = W + F, OP =
                                 |W - F|, float32: inphase.nii.gz,
                                 outphase.nii.gz) with the manual labels, as
                                 a two-point Dixon without the separation
  nifti_edit.py void SRC DST K0 K1 I J R
                                 a signal void (metal, air): water and fat
                                 zero in a disc of R voxels about column I,
                                 row J on the slices K0 .. K1 - 1; labels
                                 kept (the muscle around it)
  nifti_edit.py plane SRC DST A  a fat plane between multifidus and erector
                                 spinae, as older subjects show: the voxels
                                 of either muscle with an in-plane
                                 4-neighbour in the other muscle of the same
                                 side (a line about two voxels wide along
                                 the manual boundary) turn a share A of
                                 their water into fat; those then fat-
                                 dominant (FF above 0.5) lose their label,
                                 as the plane is left out of both muscles
"""
import array
import gzip
import math
import random
import struct
import sys

CODES = {2: "B", 4: "h", 8: "i", 16: "f", 64: "d", 256: "b", 512: "H", 768: "I"}


def read(path):
    b = gzip.open(path).read()
    assert struct.unpack("<i", b[:4])[0] == 348, f"{path}: NIfTI-1 expected"
    dims = struct.unpack("<8h", b[40:56])
    dt = struct.unpack("<h", b[70:72])[0]
    off = int(struct.unpack("<f", b[108:112])[0])
    a = array.array(CODES[dt])
    a.frombytes(b[off:off + a.itemsize * dims[1] * dims[2] * dims[3]])
    return b[:off], dims, a


def write(path, head, a):
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(head + a.tobytes())


def mirror(head, dims, a, name):
    out = array.array(a.typecode)
    for r in range(0, len(a), dims[1]):
        row = a[r:r + dims[1]]
        row.reverse()
        out.extend(row)
    if name == "labels_manual":
        swap = {1: 4, 4: 1, 2: 3, 3: 2}
        out = array.array(a.typecode, (swap.get(int(v), v) for v in out))
    return out


def noise(head, dims, a, name, sigma, slices, rng):
    if name == "labels_manual":
        return a
    integer = a.typecode in "BbHhIi"
    top = {"B": 0xFF, "H": 0xFFFF, "h": 0x7FFF, "I": 0xFFFFFFFF, "i": 0x7FFFFFFF, "b": 0x7F}
    for q in range(dims[1] * dims[2] * slices):
        x = a[q] + rng.gauss(0.0, sigma)
        y = rng.gauss(0.0, sigma)
        v = math.sqrt(x * x + y * y)
        a[q] = min(top[a.typecode], round(v)) if integer else v
    return a


def twist(head, dims, a, name, a0, a1):
    nx, ny, nz = dims[1], dims[2], dims[3]
    ci, cj = 0.5 * (nx - 1), 0.5 * (ny - 1)
    out = array.array(a.typecode, bytes(a.itemsize * len(a)))
    for k in range(nz):
        t = math.radians(a0 + (a1 - a0) * k / max(1, nz - 1))
        c, s = math.cos(t), math.sin(t)
        base = k * nx * ny
        for j in range(ny):
            y = j - cj
            x0 = c * (-ci) + s * y + ci  # source i of output i = 0
            y0 = -s * (-ci) + c * y + cj
            row = base + j * nx
            for i in range(nx):
                si = int(math.floor(x0 + c * i + 0.5))
                sj = int(math.floor(y0 - s * i + 0.5))
                if 0 <= si < nx and 0 <= sj < ny:
                    out[row + i] = a[base + sj * nx + si]
    return out


def fatty(dims, w, f, lab, share, only=0):
    nx, ny, nz = dims[1], dims[2], dims[3]
    offs = [(di, dj) for di in range(-3, 4) for dj in range(-3, 4) if abs(di) + abs(dj) <= 3]
    integer = w.typecode in "BbHhIi"
    for k in range(nz):
        base = k * nx * ny
        grown = set()
        for q in range(base, base + nx * ny):
            if lab[q] and (not only or lab[q] == only):
                i, j = (q - base) % nx, (q - base) // nx
                for di, dj in offs:
                    p = base + (j + dj) * nx + i + di
                    if 0 <= i + di < nx and 0 <= j + dj < ny and (not only or lab[p] in (0, only)):
                        grown.add(p)
        for q in grown:
            ww, ff = float(w[q]), float(f[q])
            tot = ww + ff
            m = min(1.0, max(0.0, (0.9 - (ff / tot if tot > 0 else 1.0)) / 0.8))
            d = ww * share * m
            w[q] = round(ww - d) if integer else ww - d
            f[q] = f[q] + d if f.typecode in "fd" else round(ff + d)


def fat_plane(dims, w, f, lab, share):
    nx, ny, nz = dims[1], dims[2], dims[3]
    other = {1: 2, 2: 1, 3: 4, 4: 3}  # scheme lpm: ES right/MF right, MF left/ES left
    integer = w.typecode in "BbHhIi"
    for k in range(nz):
        base = k * nx * ny
        line = []
        for q in range(base, base + nx * ny):
            o = other.get(int(lab[q]))
            if not o:
                continue
            i, j = (q - base) % nx, (q - base) // nx
            for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                if 0 <= i + di < nx and 0 <= j + dj < ny and lab[q + dj * nx + di] == o:
                    line.append(q)
                    break
        for q in line:
            ww, ff = float(w[q]), float(f[q])
            d = ww * share
            w[q] = round(ww - d) if integer else ww - d
            f[q] = ff + d if f.typecode in "fd" else round(ff + d)
            if ff + d > ww - d:
                lab[q] = 0


def scale(head, f):
    h = bytearray(head)
    p = list(struct.unpack("<8f", h[76:108]))
    p[1] *= f
    p[2] *= f
    struct.pack_into("<8f", h, 76, *p)
    for r in range(3):
        off = 280 + 16 * r
        row = list(struct.unpack("<4f", h[off:off + 16]))
        row[0] *= f
        row[1] *= f
        struct.pack_into("<4f", h, off, *row)
    return bytes(h)


def fine(head, dims, a, n):
    nx, ny, nz = dims[1], dims[2], dims[3]
    h = bytearray(head)
    d = list(struct.unpack("<8h", h[40:56]))
    d[1], d[2] = nx * n, ny * n
    struct.pack_into("<8h", h, 40, *d)
    p = list(struct.unpack("<8f", h[76:108]))
    p[1] /= n
    p[2] /= n
    struct.pack_into("<8f", h, 76, *p)
    for r in range(3):  # voxel (0, 0) of the fine grid sits in the first coarse voxel's corner
        off = 280 + 16 * r
        row = list(struct.unpack("<4f", h[off:off + 16]))
        row[3] += (0.5 / n - 0.5) * (row[0] + row[1])
        row[0] /= n
        row[1] /= n
        struct.pack_into("<4f", h, off, *row)
    out = array.array(a.typecode)
    for q in range(0, nx * ny * nz, nx):
        row = array.array(a.typecode, bytes(a.itemsize * nx * n))
        for u in range(n):
            row[u::n] = a[q:q + nx]
        for _ in range(n):
            out.extend(row)
    return bytes(h), out


def thick(head, dims, a, n, name):
    nx, ny, nz = dims[1], dims[2], dims[3]
    m, plane = nz // n, nx * ny
    h = bytearray(head)
    d = list(struct.unpack("<8h", h[40:56]))
    d[3] = m
    struct.pack_into("<8h", h, 40, *d)
    p = list(struct.unpack("<8f", h[76:108]))
    p[3] *= n
    struct.pack_into("<8f", h, 76, *p)
    for r in range(3):  # the new slice k covers the old k n .. k n + n - 1
        off = 280 + 16 * r
        row = list(struct.unpack("<4f", h[off:off + 16]))
        row[3] += 0.5 * (n - 1) * row[2]
        row[2] *= n
        struct.pack_into("<4f", h, off, *row)
    out = array.array(a.typecode, bytes(a.itemsize * m * plane))
    integer = a.typecode not in "fd"
    for k in range(m):
        src = [a[(k * n + q) * plane:(k * n + q + 1) * plane] for q in range(n)]
        for v in range(plane):
            vals = [s[v] for s in src]
            if name == "labels_manual":
                best = 0
                for lab in set(vals):
                    if lab and 2 * vals.count(lab) >= n and (not best or vals.count(lab) > vals.count(best)):
                        best = lab
                out[k * plane + v] = best
            else:
                mean = sum(vals) / n
                out[k * plane + v] = round(mean) if integer else mean
    return bytes(h), out


def curve(head, dims, a, mm):
    nx, ny, nz = dims[1], dims[2], dims[3]
    pix = struct.unpack("<f", head[80:84])[0]  # pixdim[1]: the first axis's spacing
    out = array.array(a.typecode, bytes(a.itemsize * len(a)))
    for k in range(nz):
        s = int(round(mm * math.sin(math.pi * k / max(1, nz - 1)) / pix))
        for q in range(k * nx * ny, (k + 1) * nx * ny, nx):
            if s >= 0:
                out[q + s:q + nx] = a[q:q + nx - s]
            else:
                out[q:q + nx + s] = a[q - s:q + nx]
    return out


def tilt(head, deg):
    h = bytearray(head)
    qcode, scode = struct.unpack("<hh", h[252:256])
    if qcode > 0:
        b, c, d, qx, qy, qz = struct.unpack("<6f", h[256:280])
        a = math.sqrt(max(0.0, 1.0 - b * b - c * c - d * d))
        r = [[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
             [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
             [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - b * b - c * c]]
        pix = struct.unpack("<8f", h[76:108])
        sc = [pix[1], pix[2], pix[3] * (-1.0 if pix[0] < 0 else 1.0)]
        m = [[r[i][j] * sc[j] for j in range(3)] + [(qx, qy, qz)[i]] for i in range(3)]
    else:
        assert scode > 0, "no qform or sform"
        m = [list(struct.unpack("<4f", h[280 + 16 * i:296 + 16 * i])) for i in range(3)]
    t = math.radians(deg)
    rot = [[1.0, 0.0, 0.0], [0.0, math.cos(t), -math.sin(t)], [0.0, math.sin(t), math.cos(t)]]
    out = [[sum(rot[i][k] * m[k][j] for k in range(3)) for j in range(4)] for i in range(3)]
    struct.pack_into("<hh", h, 252, 0, 1)
    for i in range(3):
        struct.pack_into("<4f", h, 280 + 16 * i, *out[i])
    return bytes(h)


def sub_header(head, axis, k0, k1):
    """The header of voxels k0 .. k1 - 1 along voxel axis 0, 1 or 2: that
    dimension shortened, the sform's origin moved to voxel k0."""
    h = bytearray(head)
    d = list(struct.unpack("<8h", h[40:56]))
    d[1 + axis] = k1 - k0
    struct.pack_into("<8h", h, 40, *d)
    for r in range(3):
        off = 280 + 16 * r
        row = list(struct.unpack("<4f", h[off:off + 16]))
        row[3] += k0 * row[axis]
        struct.pack_into("<4f", h, off, *row)
    return bytes(h)


def crop(head, dims, a, i0, i1):
    nx, ny, nz = dims[1], dims[2], dims[3]
    out = array.array(a.typecode)
    for q in range(0, nx * ny * nz, nx):
        out.extend(a[q + i0:q + i1])
    return sub_header(head, 0, i0, i1), out


def rows(head, dims, a, j0, j1):
    nx, ny, nz = dims[1], dims[2], dims[3]
    out = array.array(a.typecode)
    for k in range(nz):
        base = k * nx * ny
        out.extend(a[base + j0 * nx:base + j1 * nx])
    return sub_header(head, 1, j0, j1), out


def slices(head, dims, a, k0, k1):
    nx, ny = dims[1], dims[2]
    return sub_header(head, 2, k0, k1), a[k0 * nx * ny:k1 * nx * ny]


def backfat(dims, pix, w, f, lab, mm):
    nx, ny, nz = dims[1], dims[2], dims[3]
    n, d = round(mm / pix), round(8.0 / pix)
    for k in range(nz):
        base = k * nx * ny
        tot = [float(w[base + q]) + float(f[base + q]) for q in range(nx * ny)]
        srt = sorted(tot)
        thr = 0.1 * srt[min(len(srt) - 1, int(0.99 * len(srt)))]
        for i in range(nx):
            col = [tot[j * nx + i] for j in range(ny)]
            last = max((j for j in range(ny) if col[j] > thr), default=-1)
            p = last - d
            if last < 0 or p <= 0 or last + n >= ny:
                continue
            for a in (w, f, lab):
                v = [a[base + j * nx + i] for j in range(ny)]
                new = v[:p] + [v[p]] * n + v[p:ny - n]
                if a is lab:
                    new[p:p + n] = [0] * n
                for j in range(ny):
                    a[base + j * nx + i] = new[j]


def thinfat(dims, pix, w, f, lab, mm):
    nx, ny, nz = dims[1], dims[2], dims[3]
    keep = round(mm / pix)
    for k in range(nz):
        base = k * nx * ny
        tot = [float(w[base + q]) + float(f[base + q]) for q in range(nx * ny)]
        srt = sorted(tot)
        thr = 0.1 * srt[min(len(srt) - 1, int(0.99 * len(srt)))]
        run, want, last = [0] * nx, [None] * nx, [-1] * nx
        for i in range(nx):
            col = [tot[j * nx + i] for j in range(ny)]
            jb = max((j for j in range(ny) if col[j] > thr), default=-1)
            if jb < 0:
                continue
            j = jb  # the skin: up to 8 voxels before the first fat-dominant one

            def isfat(j):
                return col[j] > thr and float(f[base + j * nx + i]) > 0.6 * col[j]

            while j > jb - 8 and j > 0 and not isfat(j):
                j -= 1
            if not isfat(j):
                continue
            j1, j0, lean = j, j, 0
            while j > 0 and lean <= 2 and lab[base + j * nx + i] == 0:
                lean = 0 if isfat(j) else lean + 1
                if lean == 0:
                    j0 = j
                j -= 1
            run[i] = max(0, j1 - j0 + 1 - keep)  # never more than this column's fat
            last[i] = j0 + keep  # the first voxel removed
            if lab[base + j * nx + i] != 0:
                want[i] = run[i]  # a column that reaches a muscle
        # the cut of the columns that reach a muscle, interpolated across the
        # midline and tapered to 0 over 30 columns beside them
        got = [i for i in range(nx) if want[i] is not None]
        for i in range(nx):
            if not got or want[i] is not None:
                continue
            lo = max((g for g in got if g < i), default=None)
            hi = min((g for g in got if g > i), default=None)
            if lo is not None and hi is not None:
                want[i] = want[lo] + (want[hi] - want[lo]) * (i - lo) / (hi - lo)
            else:
                g = lo if lo is not None else hi
                want[i] = want[g] * max(0.0, 1.0 - abs(i - g) / 30.0)
        cut = [min(run[i], round(want[i] or 0)) for i in range(nx)]
        cut = [min(cut[max(0, i - 3):i + 4]) for i in range(nx)]
        for i in range(nx):
            n, p = cut[i], last[i]  # the removed voxels: p .. p + n - 1
            if n <= 0:
                continue
            for a in (w, f, lab):
                v = [a[base + j * nx + i] for j in range(ny)]
                new = v[:p] + v[p + n:] + [0] * n
                for j in range(ny):
                    a[base + j * nx + i] = new[j]


def swap(dims, w, f, k):
    plane = dims[1] * dims[2]
    for q in range(k * plane, (k + 1) * plane):
        a, b = float(w[q]), float(f[q])
        w[q] = round(b) if w.typecode in "BbHhIi" else b
        f[q] = round(a) if f.typecode in "BbHhIi" else a


def void(dims, w, f, k0, k1, ci, cj, r):
    """water and fat zero in a disc of radius r voxels about column ci, row
    cj on the slices k0 .. k1 - 1 (a signal void: metal, air)"""
    nx, ny = dims[1], dims[2]
    for k in range(k0, k1):
        for j in range(max(0, int(cj - r)), min(ny, int(cj + r) + 1)):
            for i in range(max(0, int(ci - r)), min(nx, int(ci + r) + 1)):
                if (i - ci) ** 2 + (j - cj) ** 2 < r * r:
                    q = (k * ny + j) * nx + i
                    w[q] = 0
                    f[q] = 0


def main():
    what, src, dst = sys.argv[1:4]
    rng = random.Random(5)
    # the edits that change water, fat and labels together, in place:
    # each gets (water head, dims, water, fat, labels) and the arguments
    joint = {
        "backfat": lambda hd, dims, w, f, lab: backfat(
            dims, struct.unpack("<f", hd[84:88])[0], w, f, lab,  # pixdim[2]: the row spacing
            float(sys.argv[4])),
        "thinfat": lambda hd, dims, w, f, lab: thinfat(
            dims, struct.unpack("<f", hd[84:88])[0], w, f, lab, float(sys.argv[4])),
        "swap": lambda hd, dims, w, f, lab: swap(dims, w, f, int(sys.argv[4])),
        "plane": lambda hd, dims, w, f, lab: fat_plane(dims, w, f, lab, float(sys.argv[4])),
        "void": lambda hd, dims, w, f, lab: void(dims, w, f, *map(int, sys.argv[4:8]),
                                                 float(sys.argv[8])),
        "fatty": lambda hd, dims, w, f, lab: fatty(
            dims, w, f, lab, float(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else 0),
    }
    if what == "ipop":
        (hw, dims, w), (hf, _, f) = read(f"{src}/water.nii.gz"), read(f"{src}/fat.nii.gz")
        h = bytearray(hw)
        struct.pack_into("<hh", h, 70, 16, 32)  # datatype float32, bitpix
        struct.pack_into("<ff", h, 112, 1.0, 0.0)  # scl_slope, scl_inter
        ip, op = array.array("f"), array.array("f")
        for a, b in zip(w, f):
            ip.append(float(a) + float(b))
            op.append(abs(float(a) - float(b)))
        write(f"{dst}/inphase.nii.gz", bytes(h), ip)
        write(f"{dst}/outphase.nii.gz", bytes(h), op)
        hl, _, lab = read(f"{src}/labels_manual.nii.gz")
        write(f"{dst}/labels_manual.nii.gz", hl, lab)
        return
    if what in joint:
        img = {n: read(f"{src}/{n}.nii.gz") for n in ("water", "fat", "labels_manual")}
        head, dims, w = img["water"]
        joint[what](head, dims, w, img["fat"][2], img["labels_manual"][2])
        for n, (hd, _, a) in img.items():
            write(f"{dst}/{n}.nii.gz", hd, a)
        return
    for name in ("water", "fat", "labels_manual"):
        head, dims, a = read(f"{src}/{name}.nii.gz")
        if what == "mirror":
            a = mirror(head, dims, a, name)
        elif what == "curve":
            a = curve(head, dims, a, float(sys.argv[4]))
        elif what == "twist":
            a = twist(head, dims, a, name, float(sys.argv[4]), float(sys.argv[5]))
        elif what == "scale":
            head = scale(head, float(sys.argv[4]))
        elif what == "tilt":
            head = tilt(head, float(sys.argv[4]))
        elif what == "slices":
            head, a = slices(head, dims, a, int(sys.argv[4]), int(sys.argv[5]))
        elif what == "rows":
            head, a = rows(head, dims, a, int(sys.argv[4]), int(sys.argv[5]))
        elif what == "crop":
            head, a = crop(head, dims, a, int(sys.argv[4]), int(sys.argv[5]))
        elif what == "thick":
            head, a = thick(head, dims, a, int(sys.argv[4]), name)
        elif what == "fine":
            head, a = fine(head, dims, a, int(sys.argv[4]))
        elif what == "noise":
            a = noise(head, dims, a, name, float(sys.argv[4]), int(sys.argv[5]), rng)
        else:
            sys.exit(f"nifti_edit.py: unknown edit {what}")
        write(f"{dst}/{name}.nii.gz", head, a)


if __name__ == "__main__":
    main()
