"""Process-level settings that XLA:CPU training needs, measured on a 2-core host.

1. `retain_freed_memory()` — keep freed host memory for reuse. XLA:CPU allocates each
   execution's temporary buffers with malloc and frees them when it ends; glibc serves blocks
   over 32 MiB with a fresh `mmap` and returns them with `munmap`, so every train step touches
   hundreds of MB of new pages, one page fault per 4 KiB (ECCV16, 128 px, batch 8: 170k-260k
   faults, 0.4-0.5 s of kernel time a step, and threads that fault serialise on the process's
   memory map). With one malloc arena, no mmap'd blocks and no trimming, a step reuses the
   previous step's pages and takes no faults. Call it first thing in a process, before JAX starts
   its backend (threads that already own a malloc arena keep it). The process then keeps its
   peak heap until it exits. `run_then_pad_heap()` around the first step gives that heap room
   for the allocation orders of later steps.

2. `step_compiler_options(remat)` — XLA options for jitting a train step. XLA:CPU's
   `cse_barrier_expander` pass strips the optimization barriers with which `jax.checkpoint`
   (`nn.remat`) protects its recomputation, before common-subexpression elimination, which then
   merges the recomputed forward pass back into the original one: remat silently saves nothing
   (ECCV16 width 1/4, 128 px, batch 8: 102 MB of temporaries with or without remat; 36 MB with
   remat once the pass is disabled). And XLA:CPU's copy insertion by default copies a donated
   buffer that an in-place update overwrites while another fusion still reads the old value
   (Adam's first moment, read again by the parameter update); with its region analysis it
   proves most of those reads ordered: 271 -> 163 copies in the pix2pix step (128 px, batch 4),
   0.355 -> 0.332 s/step; ECCV16 236 -> 222, 1.109 -> 1.097 s. Pass the result as
   `jax.jit(..., compiler_options=...)` (`colorjax.train.make_train_step` does).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Any, Callable

import jax

# mallopt parameters of glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_retaining = False


def retain_freed_memory() -> bool:
  """Makes glibc's malloc reuse freed memory (one arena, no mmap'd blocks, no trimming).

  Returns True when applied, False where malloc is not glibc's (macOS, musl), where it does
  nothing. Must run before threads other than the main one allocate (before JAX's backend
  starts) to reach XLA's worker threads.
  """
  global _retaining
  if _retaining:
    return True
  if not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  mallopt.restype = ctypes.c_int
  # mallopt returns 1 on success; a trim threshold of -1 disables trimming (mallopt(3)).
  _retaining = all(mallopt(param, value) == 1 for param, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
  return _retaining


class _MallInfo2(ctypes.Structure):
  _fields_ = [(name, ctypes.c_size_t) for name in (
      "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
      "fordblks", "keepcost")]


def _libc():
  libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
  libc.mallinfo2.restype = _MallInfo2
  libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
  libc.free.restype, libc.free.argtypes = None, (ctypes.c_void_p,)
  return libc


def heap_bytes() -> int:
  """The bytes of malloc's main heap (mallinfo2's arena); 0 where freed memory is not retained
  or malloc has no mallinfo2 (glibc < 2.33)."""
  if not _retaining:
    return 0
  try:
    return _libc().mallinfo2().arena
  except (OSError, AttributeError):
    return 0


def pad_heap(nbytes: int, max_fraction_of_free_memory: float = 0.25) -> int:
  """Grows the retained heap by `nbytes` of pre-faulted free memory; returns what it grew by.

  With freed memory retained, the heap holds one step's temporaries once a step has run; but
  the order in which XLA:CPU's threads allocate varies, and a later step can find no free
  block large enough and grow the heap, faulting in new pages (pix2pix, 128 px, batch 4: 75k
  faults, one step 2x slower, within the first ten steps; ECCV16: 110k-230k faults, within 25
  steps): a small allocation made while a step's large temporary block is free splits it, and
  the next step's block then needs a second such hole. Called once after the first step with
  what that step grew the heap by (`run_then_pad_heap`): the room for a second step's buffers.
  At most the heap's free bytes and `max_fraction_of_free_memory` of the host's free memory are
  added; nothing where freed memory is not retained.
  """
  if not _retaining or nbytes <= 0 or jax.default_backend() != "cpu":
    return 0
  try:
    libc = _libc()
    info = libc.mallinfo2()
    free_host_bytes = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (OSError, AttributeError, ValueError):
    return 0
  nbytes = min(nbytes, info.fordblks, int(free_host_bytes * max_fraction_of_free_memory))
  if nbytes < 2**20:
    return 0
  # nbytes past the top chunk (keepcost): malloc extends the heap by nbytes, unless a free block
  # that large exists (then the room is there already, and the heap does not grow).
  block = libc.malloc(nbytes + info.keepcost)
  if not block:
    return 0
  ctypes.memset(block, 0, nbytes + info.keepcost)  # fault the pages in now; free() keeps them
  libc.free(block)
  return libc.mallinfo2().arena - info.arena


def run_then_pad_heap(first_step: Callable[[], Any]) -> Any:
  """`first_step()` to completion, then `pad_heap` by what it grew the heap; its result.

  Where nothing would be padded (freed memory not retained, not CPU) the step is only called:
  no wait for it.
  """
  if not _retaining or jax.default_backend() != "cpu":
    return first_step()
  before = heap_bytes()
  result = jax.block_until_ready(first_step())
  pad_heap(heap_bytes() - before)
  return result


def is_retaining_freed_memory() -> bool:
  """Whether `retain_freed_memory()` was applied in this process."""
  return _retaining


def step_compiler_options(remat: bool, backend: str | None = None) -> dict[str, str | bool]:
  """XLA compiler options for a train step; {} except on the CPU backend.

  On CPU: copy insertion with region analysis (fewer copies of donated buffers); with remat,
  `jax.checkpoint`'s optimization barriers kept until after CSE, so that the recomputation (and
  its memory saving) survives. Other backends keep the barriers already.
  """
  if (backend or jax.default_backend()) != "cpu":
    return {}
  # XLA:CPU's YNNPACK fusions of a dot with its neighbours put the compiled tiny ECCV16 step's
  # gradient norm 0.7% off the same step with XLA's own convs (jax 0.10.2, tests/conv_test.py).
  # Single dots, convolutions and reductions stay on YNNPACK, and the step is exact with them.
  # The reductions matter: without them the pix2pix step (128 px, batch 4) took 2.20 s instead
  # of 1.32 s (1.24 s with every YNN fusion). With every YNN fusion off the step is exact too,
  # but its reduction order moved multi-process losses 1.7e-5 (tests/launch_test.py).
  options: dict[str, str | bool] = {
      "xla_cpu_copy_insertion_use_region_analysis": True,
      "xla_cpu_experimental_ynn_fusion_type":
          "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,"
          "LIBRARY_FUSION_TYPE_REDUCE"}
  if remat:
    options["xla_disable_hlo_passes"] = "cse_barrier_expander"
  return options
