/* SPDX-License-Identifier: MIT */
/*
 * doctor.c - `vdi doctor [-I INSTANCE] [--fix]`: what this machine must
 * offer vdifs and vdi, one line per finding:
 *
 *   ok     what is well
 *   FIX    what is not, and what to do about it
 *   fixed  what --fix repaired
 *   skip   a check that does not apply here
 *
 * The checks, in this order: /dev/fuse; fusermount3 (found, and setuid
 * root unless we are root); the user's rights on /dev/shm (an object is
 * made and removed); leftovers of dead processes in /dev/shm, which
 * --fix removes; the mssql group and /opt/mssql/lib/libsqlvdi.so, when
 * SQL Server is installed.  Exit status 0 only if no FIX line was
 * printed, so after a --fix that repaired everything it is 0.
 *
 * Which sets are left over, and removing them without ever touching a
 * live one, is the library's knowledge (vdi_leftovers_list, D16, D32);
 * this file looks at the machine and prints.
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "cli.h"
#include "vdi.h"

#define LIBSQLVDI "/opt/mssql/lib/libsqlvdi.so"

struct doctor {
	const char *instance; /* -I: only this instance's leftovers */
	int fix;              /* --fix */
	int problems;         /* FIX lines printed */
};

static void say(struct doctor *d, const char *tag, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void say(struct doctor *d, const char *tag, const char *fmt, ...)
{
	char buf[1024], safe[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (!strcmp(tag, "FIX"))
		d->problems++;
	/* Names come from /dev/shm and the password database. */
	printf("%-5s %s\n", tag, vdi_escape_text(safe, sizeof(safe), buf));
}

/* "1.5 GiB" style, into buf. */
static const char *human(char *buf, size_t len, uint64_t n)
{
	static const char *const units[] = { "bytes", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)n;
	size_t u = 0;

	while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu bytes", (unsigned long long)n);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
	return buf;
}

/* ------------------------------------------------------------ FUSE */

static void check_fuse(struct doctor *d)
{
	struct stat st;

	if (stat("/dev/fuse", &st) < 0)
		say(d, "FIX",
		    "/dev/fuse: %s: load the fuse module (modprobe fuse); in a container, pass the device (--device /dev/fuse)",
		    strerror(errno));
	else if (!S_ISCHR(st.st_mode))
		say(d, "FIX",
		    "/dev/fuse: not a character device: remove it and load the fuse module (modprobe fuse)");
	else if (access("/dev/fuse", R_OK | W_OK) < 0)
		say(d, "FIX",
		    "/dev/fuse: not readable and writable by you (mode %04o, owner uid %u): give it its usual mode (chmod 0666 /dev/fuse)",
		    (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid);
	else
		say(d, "ok", "/dev/fuse: a character device you can read and write");
}

/* The first executable `name` on $PATH, into buf; 0 or -1. */
static int find_in_path(const char *name, char *buf, size_t len)
{
	const char *path = getenv("PATH");
	const char *p, *end;

	for (p = path && *path ? path : "/usr/bin:/bin"; *p; p = *end ? end + 1 : end) {
		end = strchr(p, ':');
		if (!end)
			end = p + strlen(p);
		snprintf(buf, len, "%.*s/%s", (int)(end - p), end == p ? "." : p, name);
		if (access(buf, X_OK) == 0)
			return 0;
	}
	return -1;
}

static void check_fusermount(struct doctor *d)
{
	char path[4096];
	struct stat st;

	if (find_in_path("fusermount3", path, sizeof(path)) < 0) {
		say(d, "FIX",
		    "fusermount3: not found in PATH: install fuse3 (apt-get install fuse3)");
		return;
	}
	if (geteuid() == 0) {
		say(d, "ok", "fusermount3: %s (you are root and need no setuid helper)", path);
		return;
	}
	if (stat(path, &st) < 0 || st.st_uid != 0 || !(st.st_mode & S_ISUID))
		say(d, "FIX",
		    "fusermount3: %s is not setuid root, so vdifs cannot mount as a user: chmod u+s %s (owner root), or mount as root",
		    path, path);
	else
		say(d, "ok", "fusermount3: %s, setuid root", path);
}

/* ------------------------------------------------------------ /dev/shm */

static void check_shm(struct doctor *d)
{
	char name[64], free_b[32];
	struct statvfs sv;
	struct stat st;
	int fd, err;

	if (stat("/dev/shm", &st) < 0 || !S_ISDIR(st.st_mode)) {
		say(d, "FIX",
		    "/dev/shm: missing: mount a tmpfs there (mount -t tmpfs -o mode=1777 tmpfs /dev/shm)");
		return;
	}
	snprintf(name, sizeof(name), "/vdi-doctor.%d", (int)getpid());
	fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0) {
		say(d, "FIX",
		    "/dev/shm: you cannot create shared memory objects: %s: it must be writable by everyone, with the sticky bit (chmod 1777 /dev/shm)",
		    strerror(errno));
		return;
	}
	err = ftruncate(fd, 65536) < 0 ? errno : 0;
	close(fd);
	if (shm_unlink(name) < 0) {
		say(d, "FIX", "/dev/shm: you cannot remove the object you made (/dev/shm%s): %s",
		    name, strerror(errno));
		return;
	}
	if (err) {
		say(d, "FIX", "/dev/shm: you cannot size a shared memory object: %s",
		    strerror(err));
		return;
	}
	if (statvfs("/dev/shm", &sv) == 0)
		human(free_b, sizeof(free_b), (uint64_t)sv.f_bavail * sv.f_frsize);
	else
		snprintf(free_b, sizeof(free_b), "unknown space");
	say(d, "ok", "/dev/shm: you can create and remove shared memory objects (%s free)", free_b);
}

/* ------------------------------------------------------------ leftovers */

struct leftover_scan {
	struct doctor *d;
	int seen;
};

static void describe(const struct vdi_leftover *l, char *buf, size_t len)
{
	char size[32];

	human(size, sizeof(size), l->bytes);
	switch (l->kind) {
	case VDI_LEFTOVER_SET:
		if (l->server_pid)
			snprintf(
				buf, len,
				"leftover set '%s' (instance %s, %s) of dead client pid %d and dead server pid %d",
				l->name, l->instance, size, (int)l->client_pid, (int)l->server_pid);
		else
			snprintf(
				buf, len,
				"leftover set '%s' (instance %s, %s) of dead client pid %d, never opened by a server",
				l->name, l->instance, size, (int)l->client_pid);
		break;
	case VDI_LEFTOVER_DEBRIS:
		snprintf(buf, len, "debris /dev/shm/%s (%s): named like a set but holds none",
		         l->object, size);
		break;
	case VDI_LEFTOVER_AREA:
		snprintf(buf, len, "orphan buffer area /dev/shm/%s (%s) of set '%s', which is gone",
		         l->object, size, l->name);
		break;
	}
}

static int one_leftover(void *arg, const struct vdi_leftover *l)
{
	struct leftover_scan *sc = arg;
	char what[512];
	int rc;

	if (sc->d->instance && strcmp(sc->d->instance, l->instance))
		return 0;
	sc->seen++;
	describe(l, what, sizeof(what));
	if (!sc->d->fix) {
		say(sc->d, "FIX", "%s: remove it with vdi doctor --fix", what);
		return 0;
	}
	rc = vdi_leftover_remove(l);
	if (rc == 0)
		say(sc->d, "fixed", "%s: removed", what);
	else if (rc == VD_E_BUSY)
		say(sc->d, "ok", "%s: in use again, kept", what);
	else if (rc == VD_E_INVALID)
		say(sc->d, "ok", "%s: already gone", what);
	else
		say(sc->d, "FIX",
		    "%s: cannot remove it: %s (remove it as its owner or root: rm /dev/shm/%s)",
		    what, vdi_last_error(), l->object);
	return 0;
}

static void check_leftovers(struct doctor *d)
{
	struct leftover_scan sc = { d, 0 };
	int rc = vdi_leftovers_list(one_leftover, &sc);

	if (rc < 0)
		say(d, "FIX", "/dev/shm: cannot look for leftovers: %s", vdi_last_error());
	else if (!sc.seen)
		say(d, "ok", "no leftovers of dead processes in /dev/shm%s%s",
		    d->instance ? " for instance " : "", d->instance ? d->instance : "");
}

/* ------------------------------------------------------------ SQL Server */

static int has_gid(const gid_t *groups, int n, gid_t gid)
{
	for (int i = 0; i < n; i++)
		if (groups[i] == gid)
			return 1;
	return 0;
}

/* Whether this process is in group gid. */
static int in_group(gid_t gid)
{
	int n = getgroups(0, NULL), yes = getegid() == gid;
	gid_t *groups = n > 0 ? calloc((size_t)n, sizeof(*groups)) : NULL;

	if (groups && (n = getgroups(n, groups)) > 0)
		yes = yes || has_gid(groups, n, gid);
	free(groups);
	return yes;
}

/* Whether user pw belongs to group gid (primary or supplementary). */
static int user_in_group(const struct passwd *pw, gid_t gid)
{
	int n = 0, yes = pw->pw_gid == gid;
	gid_t *groups;

	getgrouplist(pw->pw_name, pw->pw_gid, NULL, &n); /* sets n to the count */
	groups = n > 0 ? calloc((size_t)n, sizeof(*groups)) : NULL;
	if (groups && getgrouplist(pw->pw_name, pw->pw_gid, groups, &n) >= 0)
		yes = yes || has_gid(groups, n, gid);
	free(groups);
	return yes;
}

/* Spec 1.5: to share sets with SQL Server, the client user must be in
 * group mssql and user mssql in the client user's group. */
static void check_mssql(struct doctor *d)
{
	struct group *g = getgrnam("mssql");
	struct passwd *me, *mssql;
	char my_group[256];
	gid_t mssql_gid;

	if (!g) {
		say(d, "skip",
		    "group mssql: none on this machine (SQL Server for Linux is not installed)");
		return;
	}
	mssql_gid = g->gr_gid;
	if (in_group(mssql_gid))
		say(d, "ok", "group mssql: you are a member");
	else
		say(d, "FIX",
		    "group mssql: you are not a member, so SQL Server's sets are closed to you: usermod -aG mssql $USER, then log in again");
	me = getpwuid(geteuid());
	g = getgrgid(getegid());
	snprintf(my_group, sizeof(my_group), "%s", g ? g->gr_name : "?");
	mssql = getpwnam("mssql");
	if (!mssql || !me || me->pw_uid == 0 || me->pw_uid == mssql->pw_uid) {
		say(d, "skip", "user mssql in your group: %s",
		    !mssql ? "no user mssql" : "not needed for you");
		return;
	}
	if (user_in_group(mssql, getegid()))
		say(d, "ok", "user mssql is in your group '%s'", my_group);
	else
		say(d, "FIX",
		    "user mssql is not in your group '%s', so SQL Server cannot open your sets: usermod -aG %s mssql, then restart SQL Server",
		    my_group, my_group);
}

static void check_libsqlvdi(struct doctor *d)
{
	unsigned char id[EI_NIDENT];
	struct stat st;
	ssize_t n;
	int fd;

	if (stat(LIBSQLVDI, &st) < 0) {
		if (errno == ENOENT)
			say(d, "skip", "%s: not installed", LIBSQLVDI);
		else
			say(d, "FIX", "%s: cannot inspect it: %s", LIBSQLVDI, strerror(errno));
		return;
	}
	fd = open(LIBSQLVDI, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		say(d, "FIX", "%s: not readable by you: %s: make it readable (chmod a+r %s)",
		    LIBSQLVDI, strerror(errno), LIBSQLVDI);
		return;
	}
	n = read(fd, id, sizeof(id));
	close(fd);
	if (!S_ISREG(st.st_mode) || n != (ssize_t)sizeof(id) || memcmp(id, ELFMAG, SELFMAG) ||
	    id[EI_CLASS] != ELFCLASS64)
		say(d, "FIX", "%s: not a 64-bit ELF library: reinstall mssql-server", LIBSQLVDI);
	else
		say(d, "ok", "%s: a readable 64-bit library", LIBSQLVDI);
}

/* ------------------------------------------------------------ command */

static int parse(struct doctor *d, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "instance", required_argument, NULL, 'I' },
		{ "fix", no_argument, NULL, 'F' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "+I:", opts, NULL)) != -1) {
		if (c == 'I')
			d->instance = optarg;
		else if (c == 'F')
			d->fix = 1;
		else
			return -1;
	}
	return optind == argc ? 0 : -1;
}

/* The library's rule for instance names (vdi.h): with a name it could
 * never match, the scan would find nothing and say all is well. */
static int bad_instance(const char *s)
{
	static const char ok[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_$";
	size_t n = strlen(s);

	return n < 1 || n > VDI_MAX_INSTANCE || strspn(s, ok) != n;
}

int cmd_doctor(int argc, char **argv)
{
	struct doctor d = { NULL, 0, 0 };

	if (parse(&d, argc, argv) < 0) {
		cli_err("usage: vdi doctor [-I INSTANCE] [--fix]");
		return CLI_EXIT_USAGE;
	}
	if (d.instance && bad_instance(d.instance)) {
		cli_err("invalid instance name '%s': 1..%d letters, digits, '_' or '$'", d.instance,
		        VDI_MAX_INSTANCE);
		return CLI_EXIT_USAGE;
	}
	check_fuse(&d);
	check_fusermount(&d);
	check_shm(&d);
	check_leftovers(&d);
	check_mssql(&d);
	check_libsqlvdi(&d);
	fflush(stdout);
	return d.problems ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}
