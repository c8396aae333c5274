import json
import subprocess
import sys

_SCRIPT = """
import json, resource, sys
from colorjax.ops import xla_cpu
retained = sys.argv[1] == "retain" and xla_cpu.retain_freed_memory()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: (x @ x.T) @ x)
x = jnp.ones((6000, 64))
before = xla_cpu.heap_bytes()
f(x).block_until_ready()  # its temporary x @ x.T (144 MB) freed into the heap
grown = xla_cpu.heap_bytes() - before
padded = xla_cpu.pad_heap(grown)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
f(x).block_until_ready()
print(json.dumps({"retained": bool(retained), "grown": grown, "padded": padded,
                  "heap_after_pad": xla_cpu.heap_bytes() - before - grown,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults}))
"""


def _run(mode):
  out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], check=True, capture_output=True,
                       text=True, timeout=120).stdout
  return json.loads(out.splitlines()[-1])


def test_pad_heap_grows_a_retained_heap_by_what_the_first_step_took():
  retained = _run("retain")
  assert retained["retained"]
  # The step grew the heap by its 144 MB temporary (and the compiler's memory); the heap then
  # grows by exactly the padded bytes, and the next step faults in no new pages.
  assert retained["grown"] > 140 * 2**20
  assert 100 * 2**20 < retained["padded"] < retained["grown"] + 2**20  # malloc's top padding
  assert abs(retained["heap_after_pad"] - retained["padded"]) < 2**20
  assert retained["faults"] < 2000
  default = _run("default")  # glibc's defaults: the heap is not watched, nothing is padded
  assert not default["retained"] and default["grown"] == 0 and default["padded"] == 0
