/* SPDX-License-Identifier: MIT */
/*
 * abi.cpp - issue 9: a program written only against the installed sqlvdi
 * headers and -lsqlvdi calls every member of Microsoft's two classes and
 * gets the spec's return codes, also for wrong-state calls; timeouts,
 * names, access modes and the ownership of device objects behave as
 * docs/decisions.md D40-D46 say.  Run by tests/integration/sqlvdi.sh:
 *
 *   abi VDI-BINARY        (VDI_DATA_DIR holds abi.mdf for the backup)
 *
 * One line per check; exit status = the number of failed checks.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vdi.h"
#include "vdierror.h"

extern char **environ;

static int failures;

static void check(const char *what, bool ok)
{
	printf("sqlvdi abi: %s: %s\n", ok ? "ok" : "FAIL", what);
	if (!ok)
		failures++;
}

static void check_rc(const char *what, int got, int want)
{
	char line[512];

	snprintf(line, sizeof(line), "%s -> 0x%08X (want 0x%08X)", what, (unsigned)got, (unsigned)want);
	check(line, got == want);
}

static double now_ms()
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void set_name(char *buf, size_t len, const char *tag)
{
	snprintf(buf, len, "sqlvdi-abi-%d-%s", (int)getpid(), tag);
}

/* ------------------------------------------------------------------ */

static void wrong_states()
{
	ClientVirtualDeviceSet *vds = new ClientVirtualDeviceSet();
	ClientVirtualDevice *vd = (ClientVirtualDevice *)&vd; /* must become NULL */
	VDConfig cfg;
	char name[128];

	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = 1;
	set_name(name, sizeof(name), "states");
	check_rc("GetConfiguration before Create", vds->GetConfiguration(0, &cfg), VD_E_PROTOCOL);
	check_rc("OpenDevice before Create", vds->OpenDevice(name, &vd), VD_E_PROTOCOL);
	check("OpenDevice failure sets the device pointer to NULL", vd == NULL);
	check_rc("SignalAbort before Create", vds->SignalAbort(), VD_E_PROTOCOL);
	check_rc("Close before Create", vds->Close(), VD_E_PROTOCOL);
	check_rc("Create with no configuration", vds->Create(name, NULL), VD_E_INVALID);
	cfg.deviceCount = 0;
	check_rc("Create with deviceCount 0", vds->Create(name, &cfg), VD_E_NOTSUPPORTED);
	cfg.deviceCount = 1;
	check_rc("Create", vds->Create(name, &cfg), NOERROR);
	check_rc("Create again on the same object", vds->Create(name, &cfg), VD_E_PROTOCOL);
	check_rc("OpenDevice before the configuration", vds->OpenDevice(name, &vd), VD_E_PROTOCOL);
	check_rc("GetConfiguration(0) with no server: a poll", vds->GetConfiguration(0, &cfg), VD_E_TIMEOUT);
	double t0 = now_ms();
	int rc = vds->GetConfiguration(200, &cfg);
	double dt = now_ms() - t0;
	check_rc("GetConfiguration(200) with no server", rc, VD_E_TIMEOUT);
	check("GetConfiguration(200) waited 200 ms or more (milliseconds, not seconds)", dt >= 190 && dt < 5000);
	check_rc("OpenDevice with a NULL result pointer", vds->OpenDevice(name, NULL), VD_E_INVALID);
	check_rc("Close of a set no server opened", vds->Close(), NOERROR);
	check_rc("Close again", vds->Close(), VD_E_PROTOCOL);
	check_rc("the same object creates again after Close", vds->Create(name, &cfg), NOERROR);
	check_rc("SignalAbort", vds->SignalAbort(), NOERROR);
	check_rc("GetConfiguration after SignalAbort", vds->GetConfiguration(0, &cfg), VD_E_ABORT);
	check_rc("Close of the aborted set", vds->Close(), NOERROR);
	vds->RegisterDeviceClosed(); /* a client's own call changes nothing */
	delete vds;

	ClientVirtualDevice loose;
	VDC_Command *cmd = (VDC_Command *)&cmd;
	check_rc("GetCommand on a device object OpenDevice did not hand out", loose.GetCommand(0, &cmd),
		 VD_E_PROTOCOL);
	check("... and *ppCmd is NULL", cmd == NULL);
	check_rc("CompleteCommand on it", loose.CompleteCommand(NULL, 0, 0, 0), VD_E_PROTOCOL);
}

static void names()
{
	ClientVirtualDeviceSet vds;
	VDConfig cfg;
	char name[256];

	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = 1;
	snprintf(name, sizeof(name), "{6f9619ff-8b86-d011-b42d-00c04fc964ff-%d}", (int)getpid());
	check_rc("a GUID in braces is a set name", vds.Create(name, &cfg), NOERROR);
	check_rc("... Close", vds.Close(), NOERROR);
	memset(name, 'n', 127);
	name[127] = '\0';
	check_rc("a 127-byte name", vds.Create(name, &cfg), NOERROR);
	check_rc("... Close", vds.Close(), NOERROR);
	memset(name, 'n', 128);
	name[128] = '\0';
	check_rc("a 128-byte name is refused", vds.Create(name, &cfg), VD_E_INVALID);
	check_rc("a name with '/' is refused", vds.Create((char *)"a/b", &cfg), VD_E_INVALID);
	check_rc("a NULL name is refused", vds.Create(NULL, &cfg), VD_E_INVALID);
}

/* D43: modes follow the umask, never world access. */
static void modes()
{
	static const struct {
		mode_t mask;
		unsigned want;
	} rows[] = { { 0, 0660 }, { 007, 0660 }, { 022, 0600 }, { 077, 0600 } };

	for (auto &r : rows) {
		ClientVirtualDeviceSet vds;
		VDConfig cfg;
		char name[128], path[256], what[128];
		struct stat st;
		mode_t old = umask(r.mask);

		memset(&cfg, 0, sizeof(cfg));
		cfg.deviceCount = 1;
		set_name(name, sizeof(name), "mode");
		snprintf(path, sizeof(path), "/dev/shm/vdi.MSSQLSERVER.%s", name);
		int rc = vds.Create(name, &cfg);
		umask(old);
		snprintf(what, sizeof(what), "umask %03o: shared objects are %04o, group %d", (unsigned)r.mask,
			 r.want, (int)getegid());
		check(what, rc == 0 && stat(path, &st) == 0 && (st.st_mode & 07777) == r.want &&
				    st.st_gid == getegid());
		vds.Close();
	}
}

/* ------------------------------------------------------------------ */

struct waiter {
	ClientVirtualDeviceSet *vds;
	time_t timeout;
	int rc;
	double ms;
};

static void *wait_config(void *arg)
{
	waiter *w = (waiter *)arg;
	VDConfig cfg;
	double t0 = now_ms();

	w->rc = w->vds->GetConfiguration(w->timeout, &cfg);
	w->ms = now_ms() - t0;
	return NULL;
}

/* D41: negative and too large waits are forever, woken by an abort. */
static void infinite_waits()
{
	static const time_t rows[] = { -1, -12345, (time_t)0x80000000LL, (time_t)1 << 40 };

	for (time_t t : rows) {
		ClientVirtualDeviceSet vds;
		VDConfig cfg;
		char name[128], what[160];
		pthread_t th;
		waiter w = { &vds, t, 0, 0 };

		memset(&cfg, 0, sizeof(cfg));
		cfg.deviceCount = 1;
		set_name(name, sizeof(name), "wait");
		vds.Create(name, &cfg);
		pthread_create(&th, NULL, wait_config, &w);
		usleep(300 * 1000);
		vds.SignalAbort();
		pthread_join(th, NULL);
		snprintf(what, sizeof(what),
			 "GetConfiguration(%lld) waits until SignalAbort (VD_E_ABORT after %.0f ms)",
			 (long long)t, w.ms);
		check(what, w.rc == VD_E_ABORT && w.ms >= 290);
		vds.Close();
	}
}

/* ------------------------------------------------------------------ */

static pid_t spawn_exec(const char *vdi, const char *stmt)
{
	char *argv[] = { (char *)vdi, (char *)"exec", (char *)"-q", (char *)"-t", (char *)"20000",
			 (char *)stmt, NULL };
	pid_t pid;

	if (posix_spawn(&pid, vdi, NULL, NULL, argv, environ))
		return -1;
	return pid;
}

static int wait_exit(pid_t pid)
{
	int st;

	if (waitpid(pid, &st, 0) != pid)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* A backup through the classes, with `vdi exec` as the server. */
static void full_cycle(const char *vdi)
{
	ClientVirtualDeviceSet *vds = new ClientVirtualDeviceSet();
	ClientVirtualDevice *vd = NULL, *vd2 = NULL;
	VDC_Command *cmd;
	VDConfig cfg;
	char name[128], stmt[512], wrong[] = "no-such-device";
	unsigned long bytes = 0, writes = 0, flushes = 0;
	int rc, handle_ok = 0, first = 1;

	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = 1;
	set_name(name, sizeof(name), "cycle");
	check_rc("Create (backup)", vds->Create(name, &cfg), NOERROR);
	snprintf(stmt, sizeof(stmt), "BACKUP DATABASE abi TO VIRTUAL_DEVICE='%s' WITH MAXTRANSFERSIZE=65536",
		 name);
	pid_t server = spawn_exec(vdi, stmt);
	check("vdi exec started", server > 0);
	check_rc("GetConfiguration(10000)", vds->GetConfiguration(10000, &cfg), NOERROR);
	check("the server says backup (VDF_WriteMedia)", (cfg.features & VDF_WriteMedia) != 0);
	check_rc("OpenDevice of a name not in the set", vds->OpenDevice(wrong, &vd2), VD_E_INVALID);
	check_rc("OpenDevice", vds->OpenDevice(name, &vd), NOERROR);
	check_rc("OpenDevice of the open device again", vds->OpenDevice(name, &vd2), VD_E_OPEN);
	while ((rc = vd->GetCommand(-1, &cmd)) == NOERROR) {
		int code = ERROR_SUCCESS;
		unsigned long n = 0;

		switch (cmd->commandCode) {
		case VDC_Write:
			if (first) {
				unsigned int h = 0;
				uint8_t *p = NULL;

				handle_ok = vds->GetBufferHandle(cmd->buffer, &h) == NOERROR &&
					    vds->MapBufferHandle((int)h, &p) == NOERROR && p == cmd->buffer;
				check_rc("CompleteCommand with more bytes than the command",
					 vd->CompleteCommand(cmd, ERROR_SUCCESS, (unsigned long)cmd->size + 512, 0),
					 VD_E_INVALID);
				first = 0;
			}
			n = (unsigned long)cmd->size;
			bytes += n;
			writes++;
			break;
		case VDC_Flush:
			flushes++;
			break;
		case VDC_ClearError:
			break;
		default:
			code = ERROR_NOT_SUPPORTED;
		}
		if (vd->CompleteCommand(cmd, code, n, 0) != NOERROR)
			break;
		/* Microsoft's sample reads the command after completing it. */
		(void)cmd->commandCode;
	}
	check_rc("GetCommand ends with VD_E_CLOSE", rc, VD_E_CLOSE);
	check("GetBufferHandle / MapBufferHandle map a Write buffer back to its address", handle_ok);
	check("the backup moved data and flushed", bytes >= 1048576 && writes > 0 && flushes > 0);
	check_rc("GetCommand after VD_E_CLOSE (normally terminated)", vd->GetCommand(0, &cmd), VD_E_PROTOCOL);
	delete vd; /* the client may delete what it was handed (D42) */
	check_rc("Close after the client deleted its device object", vds->Close(), NOERROR);
	check("vdi exec succeeded", wait_exit(server) == 0);
	delete vds;

	/* The set deletes device objects the client kept, at Close. */
	vds = new ClientVirtualDeviceSet();
	set_name(name, sizeof(name), "abort");
	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = 1;
	vds->Create(name, &cfg);
	snprintf(stmt, sizeof(stmt), "BACKUP DATABASE abi TO VIRTUAL_DEVICE='%s'", name);
	server = spawn_exec(vdi, stmt);
	vds->GetConfiguration(10000, &cfg);
	check_rc("OpenDevice (abort case)", vds->OpenDevice(name, &vd), NOERROR);
	check_rc("GetCommand", vd->GetCommand(10000, &cmd), NOERROR);
	check_rc("SignalAbort mid-stream", vds->SignalAbort(), NOERROR);
	check_rc("CompleteCommand after the abort", vd->CompleteCommand(cmd, 0, 0, 0), VD_E_ABORT);
	check_rc("GetCommand after the abort", vd->GetCommand(-1, &cmd), VD_E_ABORT);
	check_rc("Close of the aborted set (devices kept by the client)", vds->Close(), NOERROR);
	check("vdi exec fails after the client's abort", wait_exit(server) == 1);
	delete vds;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: abi VDI-BINARY\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	wrong_states();
	names();
	modes();
	infinite_waits();
	full_cycle(argv[1]);
	printf("sqlvdi abi: %d failure(s)\n", failures);
	return failures;
}
