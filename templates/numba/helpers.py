# The numba target's versions of helpers/*.py functions (same names, same results):
# large matrix products split into row blocks that run on every core.  NumPy's BLAS
# calls release the GIL, so Python threads run them side by side; mid-sized ones run
# as parallel compiled loops (prange) whose blocks call BLAS, since numba's threads
# start sooner.  Each block is the same product on fewer rows, so the results equal
# the NumPy target's.  Blocks separated by `# --- name` lines, like helpers/*.py.

# --- _in_parallel
def _in_parallel(rows, block, work):
    """block(slice) for row blocks covering range(rows): on numba's thread count
    (NUMBA_NUM_THREADS) when `work` (multiply-adds) is large, else in one call."""
    threads = min(numba.config.NUMBA_NUM_THREADS, rows)
    # waking a thread costs 30-60 us on a 2-core VM: measured, W -= a.T @ b split in two
    # took 1.5-1.8x as long as one call at 3M multiply-adds, 0.8x at 13M on a quiet
    # machine but more than 1x on a busy one, and 0.6x from 34M on
    if threads < 2 or work < 1 << 24:
        block(slice(0, rows))
        return
    bounds = [rows * k // threads for k in range(threads + 1)]
    parts = iter([slice(bounds[k], bounds[k + 1]) for k in range(threads)])

    def run():
        for part in parts:
            block(part)
    _finish_shared(run, _start_shared(run))

# --- _start_shared
def _start_shared(run):
    """Hand run() to every worker thread (started on first use); returns their futures.
    run takes its work from an iterator that all threads share, so work a busy worker
    has not begun falls to the others (next() on a list iterator is atomic)."""
    global _WORKERS
    if _WORKERS is None:
        import concurrent.futures
        _WORKERS = concurrent.futures.ThreadPoolExecutor(numba.config.NUMBA_NUM_THREADS - 1)
    return [_WORKERS.submit(run) for _ in range(numba.config.NUMBA_NUM_THREADS - 1)]

# --- _finish_shared
def _finish_shared(run, pending):
    """run() on this thread too, then wait for the workers that began it (one still
    busy with earlier work is not waited for: this thread has done its share)."""
    run()
    for future in pending:
        if not future.cancel():
            future.result()

# --- _linear_steps
def _linear_steps(x, W, b, workspace=None):
    """x (..., n) @ W.T + b at every position: one 2-D product per block of rows, or,
    with few rows (every block would read all of W), per block of W's rows; into the
    buffer _workspace keeps under the name `workspace` where given."""
    rows = x.reshape(-1, x.shape[-1])
    out = _workspace(workspace, (len(rows), W.shape[0]), np.result_type(rows, W))

    def row_block(part):
        np.matmul(rows[part], W.T, out=out[part])
        out[part] += b

    def column_block(part):
        np.matmul(rows, W[part].T, out=out[:, part])
        out[:, part] += b[part]
    few = len(rows) < _FEW_ROWS
    _in_parallel(len(W) if few else len(rows), column_block if few else row_block,
                 rows.size * W.shape[0])
    return out.reshape(x.shape[:-1] + (W.shape[0],))

# --- _matmul_steps
def _matmul_steps(a, b):
    """a (..., n) @ b (n, m) over all leading axes, one product per block of rows (with
    b stored transposed, (b.T @ a.T).T, as the NumPy target computes it), or, with few
    rows, the sum of the products of blocks of a's columns and b's rows."""
    rows = a.reshape(-1, a.shape[-1])
    out = np.empty((len(rows), b.shape[-1]), dtype=np.result_type(rows, b))
    transposed = b.flags.f_contiguous and not b.flags.c_contiguous

    def row_block(part):
        if transposed:
            np.matmul(b.T, rows[part].T, out=out[part].T)
        else:
            np.matmul(rows[part], b, out=out[part])
    if len(rows) >= _FEW_ROWS:
        _in_parallel(len(rows), row_block, rows.size * b.shape[-1])
        return out.reshape(a.shape[:-1] + (b.shape[-1],))
    partial = {}

    def inner_block(part):
        if transposed:      # BLAS is faster on the row-major b.T: (b.T @ a.T).T
            partial[part.start] = (b[part].T @ rows[:, part].T).T
        else:
            partial[part.start] = rows[:, part] @ b[part]
    _in_parallel(len(b), inner_block, rows.size * b.shape[-1])
    np.sum([partial[start] for start in sorted(partial)], axis=0, out=out)
    return out.reshape(a.shape[:-1] + (b.shape[-1],))

# --- _dot_split
def _dot_split(a, b):
    """np.dot(a, b) for a dense layer's forward (a: rows of inputs, b: W.T), a's rows
    split between numba's threads (_dot_rows) from _SPLIT_WORK multiply-adds on:
    measured on a 2-core VM, 0.73x as long as NumPy's one call for 64 x 784 x 256."""
    if (a.ndim == b.ndim == 2 and len(a) > 1 and (b.flags.c_contiguous or b.flags.f_contiguous)
            and _numba_splits(a.size * b.shape[1], a, b)):
        out = np.empty((len(a), b.shape[1]), dtype=a.dtype)
        _dot_rows(np.ascontiguousarray(a), b, out, numba.get_num_threads())
        return out
    return np.dot(a, b)

# --- _numba_splits
def _numba_splits(work, *arrays):
    """Whether numba's threads split a product of `work` multiply-adds of these arrays:
    from _SPLIT_WORK on, with more than one thread, for float32 or float64 alike."""
    return (work >= _SPLIT_WORK and numba.config.NUMBA_NUM_THREADS > 1
            and arrays[0].dtype.char in "fd" and all(x.dtype == arrays[0].dtype for x in arrays))

# --- _block_rows
def _block_rows(W, a):
    """Rows of W per block of W -= a.T @ b: all of them where a has many rows or W fits
    in cache, else about a megabyte's (see _subtract_rows)."""
    if len(a) > 128 or W.nbytes <= 1 << 22:
        return len(W)
    return max(1, (1 << 20) // max(1, W.itemsize * W[0].size))

# --- _dot_rows
@numba.njit(parallel=True, nogil=True, cache=_CACHE)
def _dot_rows(a, b, out, threads):
    """out = a @ b, one range of a's rows for each of `threads` threads (numba's
    np.dot calls BLAS)."""
    n = len(a)
    for k in numba.prange(threads):
        start, stop = n * k // threads, n * (k + 1) // threads
        if start < stop:
            np.dot(a[start:stop], b, out[start:stop])

# --- _subtract_product
def _subtract_product(W, a, b):
    """W -= a.T @ b, W's rows in blocks on every core, each block as the NumPy target
    does it (about a megabyte of rows at a time while it is in cache).  Below 2**24
    multiply-adds, where waking Python's worker threads costs more than it saves,
    numba's threads take the blocks (_subtract_split) from _SPLIT_WORK on: measured on
    a 2-core VM, 0.73x as long as NumPy's one call at 13M multiply-adds."""
    if W.flags.f_contiguous and not W.flags.c_contiguous:
        W, a, b = W.T, b, a     # stored transposed (init_params): W.T -= b.T @ a, row-major
    work = W.size * len(a)
    if work < 1 << 24 and W.flags.c_contiguous and _numba_splits(work, W, a, b):
        _subtract_split(W, np.ascontiguousarray(a), np.ascontiguousarray(b), _block_rows(W, a),
                        numba.get_num_threads())
        return

    def block(part):
        _subtract_rows(W[part], a[:, part], b)
    _in_parallel(len(W), block, work)

# --- _subtract_split
@numba.njit(parallel=True, nogil=True, cache=_CACHE)
def _subtract_split(W, a, b, rows, threads):
    """W -= a.T @ b for a row-major W: one range of W's rows for each of `threads`
    threads, `rows` rows at a time (numba's np.dot calls BLAS; a's columns are copied
    to be contiguous).  threads is an argument: a function that asks numba for it
    cannot be cached on disk."""
    n = len(W)
    for k in numba.prange(threads):
        end = n * (k + 1) // threads
        for start in range(n * k // threads, end, rows):
            stop = min(start + rows, end)
            W[start:stop] -= np.dot(np.ascontiguousarray(a[:, start:stop]).T, b)

# --- _subtract_rows
def _subtract_rows(W, a, b):
    """W -= a.T @ b for a row-major W (the NumPy target's _subtract_product, but a
    megabyte of rows at a time: with two threads updating their halves at once,
    blocks of four megabytes took 12% longer, where one thread alone gains 10%)."""
    rows = _block_rows(W, a)
    for start in range(0, len(W), rows):
        _subtract_into(W[start:start + rows], a[:, start:start + rows], b)

# --- _subtract_into
def _subtract_into(W, a, b):
    """W -= a.T @ b, the product formed in a buffer that the calling thread keeps
    (_workspace): fresh megabyte temporaries, made by two threads at once, were
    page-faulted at every step: about 800 faults a step of the LSTM language model at
    minibatch 1, 2.2-2.5 ms of system time on a 2-core VM, none with kept buffers."""
    product = _workspace("_subtract_into", W.shape, W.dtype)
    np.matmul(a.T, b, out=product)
    W -= product

# --- _subtract_product_later
def _subtract_product_later(W, a, b):
    """Start W -= a.T @ b on the worker threads and return the function that finishes
    it: called when this thread's other work is done, it takes the blocks of W's rows
    no worker has reached, then waits for the rest.  With few rows the product reads
    all of W for little arithmetic, and it overlaps well with serial work (a recurrent
    layer's backward); with many rows, or a small W, it is done now (_subtract_product)."""
    if W.flags.f_contiguous and not W.flags.c_contiguous:
        W, a, b = W.T, b, a     # stored transposed (init_params): W.T -= b.T @ a, row-major
    # 128 rows: where _subtract_rows stops taking W a megabyte at a time; measured on
    # the LSTM language model, started early at 320 rows the step took 7% longer
    if numba.config.NUMBA_NUM_THREADS < 2 or len(a) > 128 or W.size * len(a) < 1 << 24:
        _subtract_product(W, a, b)
        return _done
    rows = max(1, (1 << 20) // (W.itemsize * W.shape[1]))
    blocks = iter([slice(start, start + rows) for start in range(0, len(W), rows)])

    def run():
        for part in blocks:
            _subtract_into(W[part], a[:, part], b)
    pending = _start_shared(run)
    return lambda: _finish_shared(run, pending)

# --- _done
def _done():
    """What _subtract_product_later returns when it has done the work at once."""
