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
f(x).block_until_ready()  # its temporary x @ x.T (144 MB) freed into the heap
padded = xla_cpu.pad_heap()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
f(x).block_until_ready()
print(json.dumps({"retained": bool(retained), "padded": padded,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults}))
"""


def _run(mode):
  out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], check=True, capture_output=True,
                       text=True, timeout=120).stdout
  return json.loads(out.splitlines()[-1])


def test_pad_heap_adds_the_free_bytes_of_a_retained_heap():
  retained = _run("retain")
  assert retained["retained"]
  # At least the step's freed temporaries, and the step that follows faults in no new pages.
  assert retained["padded"] > 100 * 2**20
  assert retained["faults"] < 2000
  default = _run("default")  # glibc's defaults: nothing to pad
  assert not default["retained"] and default["padded"] == 0
