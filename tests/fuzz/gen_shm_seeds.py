#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# gen_shm_seeds.py - writes the seed corpus of fuzz_shm (programs in the
# input format described at the top of fuzz_shm.c):
#
#   python3 tests/fuzz/gen_shm_seeds.py tests/fuzz/corpus/shm
#
# Orderly runs of every setup (devices, direction, VDF_RequestComplete)
# plus runs where the peer writes each kind of field at each step:
# before the server opens, before the client reads the configuration,
# between SendCommand and GetCommand, and between CompleteCommand and the
# agent.  Deterministic (fixed random seed), so the files only change when
# this script does.
import os
import random
import struct
import sys

RAW, FIELD, FIELD_I, FILL, SSTEP, CSTEP, SEND, GET, COMPLETE, BUFS, INSPECT, \
    CLOSEDEV, DRAIN, COMPLETE_ALL = range(14)
NFIELDS = 169          # fuzz_shm's table (printed with VDI_FUZZ_VERBOSE=1)
NINTERESTING = 34


def op(code, dev=0, sel=None):
    """Opcode byte for code (op % 14 == code) whose high nibble selects
    device dev, or equals sel exactly when given."""
    for b in range(256):
        if b % 14 != code:
            continue
        if (sel is None and (b >> 4) % 2 == dev and b < 128) or (b >> 4) == sel:
            return bytes([b])
    raise ValueError(code)


def get_wait(dev=0):
    """GetCommand with a 1 ms wait (bit 7 of the opcode)."""
    for b in range(128, 256):
        if b % 14 == GET and (b >> 4) % 2 == dev:
            return bytes([b])
    raise ValueError(dev)


def send(dev, data=True, arg=7, code=12):
    """SendCommand on dev: a data command (kind % 4 == 0) or code."""
    for kind in range(dev << 6, (dev + 1) << 6):
        if (kind % 4 == 0) if data else (kind % 4 and kind % 21 == code):
            return op(SEND) + bytes([kind, arg])
    raise ValueError(code)


def bufs(sel, handle=0x01000000):
    return op(BUFS, sel) + struct.pack('<I', handle)


def field(idx, value):
    return op(FIELD) + bytes([idx]) + struct.pack('<I', value)


def field_i(idx, which):
    return op(FIELD_I) + bytes([idx, which])


def raw(off, data):
    return op(RAW) + struct.pack('<HB', off, len(data) - 1) + data


def fill(off, n, v):
    return op(FILL) + struct.pack('<HHB', off, n - 1, v)


def complete(dev=0, which=0, code=0, blocks=16):
    return op(COMPLETE, dev) + bytes([which, code, blocks]) + struct.pack('<I', 0)


def orderly(ndev):
    p = b''
    for d in range(ndev):
        p += op(DRAIN, d)
    return p + op(COMPLETE_ALL) + op(INSPECT)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rnd = random.Random(5)
    seeds = []
    # Orderly runs from each setup.
    for setup in (0x03, 0x07, 0x0b, 0x0f, 0x13, 0x1f):
        ndev = 2 if setup & 4 else 1
        seeds.append(bytes([setup]) + orderly(ndev))
    # Built by the program itself from a bare set.
    seeds.append(bytes([0x00]) + op(SSTEP) + op(SSTEP) + op(CSTEP) + op(SSTEP) + op(CSTEP) +
                 send(0) + send(0, False, 0, 12) + op(GET) + op(GET) + complete() +
                 bufs(0) + op(INSPECT, 1) + op(COMPLETE_ALL) + op(CLOSEDEV) + op(GET))
    seeds.append(bytes([0x04]) + op(SSTEP) + op(SSTEP) + op(CSTEP) + op(SSTEP) + op(SSTEP) +
                 op(CSTEP) + op(CSTEP) + send(0) + send(1) + op(DRAIN, 0) + op(DRAIN, 1) +
                 op(COMPLETE_ALL))
    # Bad commands and completions from the honest sides.
    seeds.append(bytes([0x03]) + send(0, False, 0, 20) + send(0, False, 0, 1) +
                 op(SEND) + bytes([0x80, 3]) + struct.pack('<IB', 1000, 0) +
                 op(GET) + op(GET) + op(COMPLETE, 0) + bytes([0, 0, 255]) + struct.pack('<I', 0))
    seeds.append(bytes([0x03]) + op(DRAIN) + bufs(1) + bufs(0) + bufs(0, 0xffffffff) +
                 op(COMPLETE_ALL))
    # The peer at each step, one field at a time.
    for i in range(0, NFIELDS, 4):
        setup = rnd.choice((0x00, 0x01, 0x02, 0x03, 0x07))
        ndev = 2 if setup & 4 else 1
        w = field_i(i, rnd.randrange(NINTERESTING)) if i % 8 else \
            field(i, rnd.choice((0, 1, 20, 256, 1000, 0xffffffff, 0x01000001)))
        if setup == 0x00:
            prog = w + op(INSPECT, 1) + op(SSTEP) + op(SSTEP) + op(CSTEP)
        elif setup == 0x01:
            prog = w + op(CSTEP) + op(INSPECT, 1) + op(SSTEP) + op(CSTEP)
        elif setup == 0x02:
            prog = send(0) + w + op(GET) + bufs(1) + op(COMPLETE_ALL)
        else:
            prog = op(DRAIN) + op(COMPLETE_ALL) + w + op(INSPECT)
        seeds.append(bytes([setup]) + prog + orderly(ndev))
    # Raw bytes and fills over the header and the device.
    seeds.append(bytes([0x03]) + raw(0, b'\xff' * 16) + orderly(1))
    seeds.append(bytes([0x03]) + op(DRAIN) + fill(1664 + 256, 4096, 0x41) + op(COMPLETE_ALL))
    seeds.append(bytes([0x07]) + fill(1664 + 12800, 12800, 0xff) + orderly(2))
    seeds.append(bytes([0x02]) + send(0) + raw(1664 + 128 + 64 + 64, b'\x01\x00\x00\x00') +
                 op(DRAIN) + op(COMPLETE_ALL))
    # Waits, a rival Create, a second buffer area (inspect's selector).
    seeds.append(bytes([0x03]) + op(DRAIN) + get_wait() + op(COMPLETE_ALL) + get_wait())
    seeds.append(bytes([0x00]) + op(INSPECT, sel=2) + field(0x2c + 0, 0) + op(INSPECT, sel=2))
    seeds.append(bytes([0x03]) + op(INSPECT, sel=4) + send(0, True, 3) + send(0, True, 5) +
                 send(0, True, 9) + op(DRAIN) + bufs(1) + op(COMPLETE_ALL))
    seeds.append(bytes([0x07]) + op(INSPECT, sel=6) + field_i(0x30, 2) + send(1, True, 1) +
                 op(DRAIN, 1) + op(COMPLETE_ALL))
    for n, s in enumerate(seeds):
        with open(os.path.join(out, 'seed%02d' % (n + 1)), 'wb') as f:
            f.write(s)
    print('%d seeds in %s' % (len(seeds), out))


main()
