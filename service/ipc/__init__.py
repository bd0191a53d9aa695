"""Between the front processes and the core process: framed messages on a Unix socket, pixels in shared memory.

A front owns one `Arena` (a shared-memory file it writes item arrays into) and one `CoreLink` (its connection to
the core). The core's `CoreServer` maps every front's arena once, reads the arrays there in place, and answers on
the same connection. Only small messages cross the socket: names, array references, results, errors.
"""
