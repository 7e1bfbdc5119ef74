/*
 * xstate.c: preloaded into Debian's linux.uml (Linux 6.1) by the l4lb test
 * bed, so that the guest runs on hosts whose XSAVE area is larger than the
 * 832 bytes (x87, SSE, AVX) that UML 6.1 reserves per guest thread.
 *
 * UML saves and restores a guest thread's FP/vector registers on the host
 * process it runs in with PTRACE_GETREGSET/PTRACE_SETREGSET NT_X86_XSTATE and
 * an 832-byte buffer. A host kernel truncates a short GETREGSET, but refuses
 * a SETREGSET that is not the whole XSAVE area with EFAULT (11,008 bytes with
 * AVX-512 and AMX), and UML then kills the guest's init ("ptrace set fp regs
 * failed, errno = 14"). Later upstream UML sizes the buffer from the host.
 *
 * This wrapper keeps, per UML buffer (one per guest thread), a shadow of the
 * whole host area: a short GETREGSET reads the whole area into the shadow and
 * hands UML its 832 bytes; a short SETREGSET writes the shadow back with
 * UML's 832 bytes on top. Every guest thread so keeps all of its registers,
 * AVX-512 ones included, as on a host whose area fits UML's buffer. Other
 * ptrace requests, and buffers already of the host's size, pass through.
 * A buffer that a new thread reuses after an old one exited starts from the
 * old thread's registers beyond UML's 832 bytes: a new thread's initial
 * values there are not something any program relies on.
 *
 * No lock: ptrace requests work only from the tracing thread, and UML 6.1
 * traces every guest process from its one kernel thread of execution.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>

#define REQ_GETREGSET 0x4204
#define REQ_SETREGSET 0x4205
#define NOTE_X86_XSTATE 0x202
#define PROBE_BYTES (64 * 1024)
/* Standard XSAVE format: legacy area, then the header's XSTATE_BV. */
#define XSTATE_BV_OFFSET 512
#define HEADER_END 576

typedef long (*ptrace_fn)(int, pid_t, void *, void *);

struct shadow {
	const void *key;     /* UML's buffer for one guest thread */
	unsigned char *area; /* the whole host area, host_bytes long */
};

#define SLOTS 16384 /* a power of two; far more than guest threads ever live */
static struct shadow shadows[SLOTS];
static ptrace_fn real_ptrace;
static size_t host_bytes;     /* 0 until probed */
static unsigned char *scratch; /* host_bytes, for threads without a shadow */
static int warned_full;

static long call_real(int req, pid_t pid, void *addr, void *data)
{
	if (!real_ptrace)
		real_ptrace = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
	return real_ptrace(req, pid, addr, data);
}

/* probe learns the host's XSAVE size from a GETREGSET into a large buffer. */
static int probe(pid_t pid)
{
	if (host_bytes)
		return 0;
	unsigned char *buf = malloc(PROBE_BYTES);
	if (!buf)
		return -1;
	struct iovec iov = { buf, PROBE_BYTES };
	if (call_real(REQ_GETREGSET, pid, (void *)NOTE_X86_XSTATE, &iov) < 0) {
		free(buf);
		return -1;
	}
	host_bytes = iov.iov_len;
	scratch = malloc(host_bytes);
	free(buf);
	if (!scratch) {
		host_bytes = 0;
		return -1;
	}
	fprintf(stderr, "l4lb bed: host XSAVE area is %zu bytes; UML's per-thread buffer is shadowed\n", host_bytes);
	return 0;
}

static size_t slot_of(const void *key)
{
	uintptr_t k = (uintptr_t)key;
	k ^= k >> 17;
	k *= 0x9e3779b97f4a7c15ULL;
	return (size_t)(k >> 40) & (SLOTS - 1);
}

/* find returns the shadow of key, creating it when create is set (NULL when
 * the table is full or memory runs out: the caller falls back to scratch). */
static struct shadow *find(const void *key, int create)
{
	size_t i = slot_of(key);
	for (size_t n = 0; n < SLOTS; n++, i = (i + 1) & (SLOTS - 1)) {
		if (shadows[i].key == key)
			return &shadows[i];
		if (!shadows[i].key) {
			if (!create)
				return NULL;
			shadows[i].area = malloc(host_bytes);
			if (!shadows[i].area)
				return NULL;
			shadows[i].key = key;
			return &shadows[i];
		}
	}
	if (create && !warned_full) {
		warned_full = 1;
		fprintf(stderr, "l4lb bed: XSAVE shadow table full; new guest threads share the registers beyond UML's 832 bytes\n");
	}
	return NULL;
}

static long get_short(pid_t pid, struct iovec *iov)
{
	struct shadow *s = find(iov->iov_base, 1);
	unsigned char *area = s ? s->area : scratch;
	struct iovec whole = { area, host_bytes };
	long r = call_real(REQ_GETREGSET, pid, (void *)NOTE_X86_XSTATE, &whole);
	if (r < 0)
		return r;
	memcpy(iov->iov_base, area, iov->iov_len);
	return r;
}

static long set_short(pid_t pid, struct iovec *iov)
{
	struct shadow *s = find(iov->iov_base, 0);
	unsigned char *area;
	if (s) {
		area = s->area;
	} else {
		/* No saved area for this buffer (a new thread, or a copy): start
		 * from what the host process holds now. */
		area = scratch;
		struct iovec whole = { area, host_bytes };
		long r = call_real(REQ_GETREGSET, pid, (void *)NOTE_X86_XSTATE, &whole);
		if (r < 0)
			return r;
	}
	uint64_t bv_area, bv_uml;
	memcpy(&bv_area, area + XSTATE_BV_OFFSET, sizeof bv_area);
	memcpy(&bv_uml, (unsigned char *)iov->iov_base + XSTATE_BV_OFFSET, sizeof bv_uml);
	memcpy(area, iov->iov_base, iov->iov_len);
	/* UML owns x87, SSE and AVX (components 0-2, all inside its 832
	 * bytes); the shadow owns the rest of XSTATE_BV. */
	uint64_t bv = (bv_uml & 0x7) | (bv_area & ~(uint64_t)0x7);
	memcpy(area + XSTATE_BV_OFFSET, &bv, sizeof bv);
	struct iovec whole = { area, host_bytes };
	return call_real(REQ_SETREGSET, pid, (void *)NOTE_X86_XSTATE, &whole);
}

long ptrace(int req, ...)
{
	va_list ap;
	va_start(ap, req);
	pid_t pid = va_arg(ap, pid_t);
	void *addr = va_arg(ap, void *);
	void *data = va_arg(ap, void *);
	va_end(ap);

	if ((req == REQ_GETREGSET || req == REQ_SETREGSET) &&
	    (uintptr_t)addr == NOTE_X86_XSTATE && data) {
		struct iovec *iov = data;
		if (probe(pid) == 0 && iov->iov_len >= HEADER_END && iov->iov_len < host_bytes) {
			int saved = errno;
			long r = req == REQ_GETREGSET ? get_short(pid, iov) : set_short(pid, iov);
			if (r >= 0)
				errno = saved;
			return r;
		}
	}
	return call_real(req, pid, addr, data);
}
