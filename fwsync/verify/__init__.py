"""fwsync reads the kernel and checks it: what fwsync's objects, as the backends' `read()` lists
them, do to a connection (kernel.py), and where that differs from what the policy says
(agree.py). Independent of the renderers and of the matcher: it parses the listed lines itself,
so a hole in either shows up as a disagreement instead of being repeated."""
