/* SPDX-License-Identifier: MIT */
/*
 * snapcmd.c - the snapshot of a snapshot backup, taken by the user's own
 * tool (vdi.h, vdi_snapshot_run): `/bin/sh -c COMMAND` with the set, the
 * device, the phase and the frozen files in its environment; its exit
 * status is the completion code of the command that asked for it.
 *
 * The child is started with fork and execve of /bin/sh only (a threaded
 * caller, vdifs, may make no other call in it).
 *
 * The command runs while SQL Server holds the database frozen, so it is
 * bounded: if the set is aborted meanwhile (the server's freeze limit
 * passed, the server died, the user aborted), the command's process group
 * is killed and the answer is ERROR_OPERATION_ABORTED.  No call tells an
 * abort to a thread that is not inside one, so the wait looks at the set
 * every 100 ms (the only timed wait of the stream adapter, and only while
 * a snapshot command runs).  The command's stderr (its last 400 bytes) is
 * the reason given on failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

#define SNAP_POLL_MS  100
#define SNAP_ERR_TAIL 400

static const char *phase_of(uint32_t code)
{
	switch (code) {
	case VDC_PrepareToFreeze: return "prepare";
	case VDC_Snapshot: return "snapshot";
	case VDC_MountSnapshot: return "mount";
	}
	return NULL;
}

extern char **environ;

/* The command's environment: ours, with VDI_SET, VDI_DEVICE, VDI_PHASE
 * and VDI_FILES set; built before fork, since after it a threaded
 * process may only make async-signal-safe calls.  Free with env_free. */
static char **env_new(const char *set, const char *dev, const char *phase, const char *files)
{
	static const char *const ours[] = { "VDI_SET=", "VDI_DEVICE=", "VDI_PHASE=", "VDI_FILES=" };
	const char *val[] = { set, dev, phase, files };
	size_t n = 0, i, k = 0;
	char **env;

	while (environ && environ[n])
		n++;
	env = calloc(n + 5, sizeof(*env));
	if (!env)
		return NULL;
	for (i = 0; i < n; i++)
		if (strncmp(environ[i], "VDI_", 4))
			env[k++] = environ[i];
	for (i = 0; i < 4; i++) {
		size_t len = strlen(ours[i]) + strlen(val[i]) + 1;

		env[k] = malloc(len);
		if (!env[k])
			break;
		snprintf(env[k++], len, "%s%s", ours[i], val[i]);
	}
	env[k] = NULL;
	return env;
}

static void env_free(char **env)
{
	size_t i;

	for (i = 0; env && env[i]; i++)
		if (!strncmp(env[i], "VDI_SET=", 8) || !strncmp(env[i], "VDI_DEVICE=", 11) ||
		    !strncmp(env[i], "VDI_PHASE=", 10) || !strncmp(env[i], "VDI_FILES=", 10))
			free(env[i]);
	free(env);
}

/* In the child: only async-signal-safe calls. */
static void child(char *const argv[], char *const env[], int errfd)
{
	setpgid(0, 0); /* so that a kill reaches everything it started */
	if (dup2(errfd, STDERR_FILENO) < 0)
		_exit(126);
	execve("/bin/sh", argv, env);
	_exit(127);
}

static int set_aborted(struct vdi_bset *set)
{
	struct vdi_set_info info;

	return set && !vdi_bset_info(set, &info) && info.state == VDI_SET_ABORTED;
}

/* Keeps the last SNAP_ERR_TAIL bytes the command wrote on stderr. */
static void take_stderr(int fd, char *tail, size_t *len)
{
	char buf[512];
	ssize_t n;

	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		size_t k = (size_t)n, keep;

		if (k >= SNAP_ERR_TAIL) {
			memcpy(tail, buf + k - SNAP_ERR_TAIL, SNAP_ERR_TAIL);
			*len = SNAP_ERR_TAIL;
			continue;
		}
		keep = *len + k > SNAP_ERR_TAIL ? SNAP_ERR_TAIL - k : *len;
		memmove(tail, tail + *len - keep, keep);
		memcpy(tail + keep, buf, k);
		*len = keep + k;
	}
}

/* The last line of what the command said, for a message. */
static const char *last_line(char *tail, size_t len)
{
	char *p;

	tail[len] = '\0';
	while (len && (tail[len - 1] == '\n' || tail[len - 1] == '\r'))
		tail[--len] = '\0';
	p = strrchr(tail, '\n');
	return p ? p + 1 : tail;
}

uint32_t vdi_snapshot_run(struct vdi_cstream *s, const char *command, uint32_t code,
                          const char *files, char *err, size_t errlen)
{
	struct vdi_bdev *dev = vdi_cstream_device(s);
	struct vdi_bset *set = vdi_bdev_set(dev);
	struct vdi_set_info info;
	const char *phase = phase_of(code);
	char tail[SNAP_ERR_TAIL + 1];
	size_t tlen = 0;
	int pfd[2], st = 0, aborted = 0;
	char *argv[4] = { (char *)"sh", (char *)"-c", (char *)command, NULL };
	char **env;
	pid_t pid, w;

	if (err && errlen)
		err[0] = '\0';
	if (!phase || !command || !*command) {
		snprintf(err, errlen, "no snapshot command for %s", vdi_strcommand(code));
		return ERROR_NOT_SUPPORTED;
	}
	memset(&info, 0, sizeof(info));
	if (set)
		vdi_bset_info(set, &info);
	env = env_new(info.name, vdi_bdev_name(dev), phase, files ? files : "");
	if (!env || pipe2(pfd, O_CLOEXEC)) {
		snprintf(err, errlen, "snapshot command: no %s: %s", env ? "pipe" : "memory",
		         strerror(errno));
		env_free(env);
		return ERROR_NO_SYSTEM_RESOURCES;
	}
	pid = fork();
	if (pid < 0) {
		snprintf(err, errlen, "snapshot command: cannot fork: %s", strerror(errno));
		close(pfd[0]);
		close(pfd[1]);
		env_free(env);
		return ERROR_NO_SYSTEM_RESOURCES;
	}
	if (pid == 0)
		child(argv, env, pfd[1]);
	env_free(env);
	close(pfd[1]);
	fcntl(pfd[0], F_SETFL, O_NONBLOCK);
	for (;;) {
		struct pollfd p = { .fd = pfd[0], .events = POLLIN };

		w = waitpid(pid, &st, WNOHANG);
		if (w == pid || (w < 0 && errno != EINTR))
			break;
		if (!aborted && set_aborted(set)) {
			aborted = 1; /* the freeze ended without us: stop the tool */
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
		}
		if (poll(&p, 1, SNAP_POLL_MS) > 0)
			take_stderr(pfd[0], tail, &tlen);
	}
	take_stderr(pfd[0], tail, &tlen);
	close(pfd[0]);
	kill(-pid, SIGKILL); /* what it left behind in its group */
	if (aborted) {
		snprintf(
			err, errlen,
			"snapshot command (%s of device '%s') killed: the set was aborted while it ran",
			phase, vdi_bdev_name(dev));
		return ERROR_OPERATION_ABORTED;
	}
	if (w == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return ERROR_SUCCESS;
	if (w == pid && WIFSIGNALED(st))
		snprintf(err, errlen,
		         "snapshot command (%s of device '%s') killed by signal %d%s%s", phase,
		         vdi_bdev_name(dev), WTERMSIG(st), tlen ? ": " : "", last_line(tail, tlen));
	else
		snprintf(err, errlen,
		         "snapshot command (%s of device '%s') failed with exit status %d%s%s",
		         phase, vdi_bdev_name(dev), w == pid ? WEXITSTATUS(st) : -1,
		         tlen ? ": " : "", last_line(tail, tlen));
	return ERROR_OPERATION_ABORTED;
}
