/* SPDX-License-Identifier: MIT */
/*
 * check_sets.c - whole sets beyond the state tables (check_states.c has
 * the tables, cell by cell): multi-device per-device states (D3, D15,
 * D17), Close with open devices (D4), abort waking waiters, timeouts
 * (D13), the queue limit (D7) with the synchronous callback (D8),
 * malformed commands and all 19 codes round trip (D11), CompleteCommand
 * with foreign or completed pointers (D21), secondaries (D22), buffer
 * handles (D24), return code names and values (spec 8) and the ABI
 * (spec 4, 6.2).  Client and server in this process; one test per
 * forked child.
 */
#include <check.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testlib.h"

#define WAIT_MS 2000u /* bound for waits that must succeed */
#define PROT    VD_E_PROTOCOL
#define ABRT    VD_E_ABORT

static struct tl_pair P;
static struct tl_cmd CMDS[VDI_QUEUE_DEPTH + 8];

static void fixture_teardown(void)
{
	tl_pair_destroy(&P);
	tl_shm_cleanup();
	tl_shm_cleanup_instance(tl_instance());
}

/* Both sides Close after a normal end; nothing is left in /dev/shm. */
static void close_both_released(void)
{
	P.client_closed = 1;
	TL_OK(vdi_client_close(P.c));
	P.server_closed = 1;
	TL_OK(vdi_server_close(P.s));
	ck_assert_int_eq(tl_shm_count_set(P.name), 0);
}

/* Server sends VDC_Write of one 64 KiB buffer on device i (CMDS[k]). */
static void send_write(uint32_t i, int k)
{
	uint8_t *b = NULL;

	TL_OK(vdi_server_allocate_buffer(P.s, &b, 65536, 0));
	memset(b, 0x5A, 65536);
	tl_cmd_init(&CMDS[k], VDC_Write, 65536, 0, b);
	TL_OK(vdi_server_send_command(P.sd[i], &CMDS[k].cmd));
}

/* ---------------------------------------------------------------------
 * Per-device states, multi-device sets (D3, D15, D17).
 */
static void setup_multi(uint32_t n)
{
	struct tl_pair_opts o;

	tl_pair_opts_default(&o);
	o.devices = n;
	o.timeout_ms = WAIT_MS;
	TL_OK(tl_pair_init(&P, &o));
}

/* Server OpenDevice(NULL) loop: n devices, then VD_E_OPEN; names. */
START_TEST(server_open_device_loop)
{
	struct vdi_server_device *d;
	int rc;
	uint32_t n = 5;

	setup_multi(n);
	TL_OK(tl_pair_advance(&P, TL_ENDED));
	for (uint32_t i = 0; i < n; i++) {
		d = NULL;
		TL_OK(vdi_server_open_device(P.s, i % 2 ? "" : NULL, &d));
		ck_assert_ptr_nonnull(d);
		for (uint32_t j = 0; j < i; j++)
			ck_assert_ptr_ne(d, P.sd[j]);
		P.sd[i] = d;
	}
	/* The first device handed out carries the set's name (D15). */
	ck_assert_str_eq(vdi_server_device_name(P.sd[0]), P.name);
	d = (struct vdi_server_device *)&rc;
	rc = vdi_server_open_device(P.s, NULL, &d);
	ck_assert_msg(rc == VD_E_OPEN, "OpenDevice #%u = %s", n + 1, vdi_strerror(rc));
	ck_assert_ptr_null(d);
	TL_RC(vdi_server_open_device(P.s, NULL, &d), VD_E_OPEN);
	TL_RC(vdi_server_open_device(P.s, P.name, &d), VD_E_OPEN);
}
END_TEST

/* Server OpenDevice by name (D15): a name picks that device; the client
 * opening the same name talks to it. */
START_TEST(server_open_device_by_name)
{
	struct vdi_server_device *d = NULL, *d0 = NULL, *d1 = NULL;
	VDC_Command *cmd = NULL;

	setup_multi(3);
	TL_OK(tl_pair_advance(&P, TL_INITIALIZING));
	TL_OK(vdi_server_open_device(P.s, P.dev[2], &d));
	ck_assert_str_eq(vdi_server_device_name(d), P.dev[2]);
	/* Already opened by the server, others still closed: PROTOCOL (D3). */
	TL_RC(vdi_server_open_device(P.s, P.dev[2], &d1), PROT);
	ck_assert_ptr_null(d1);
	TL_OK(vdi_server_open_device(P.s, NULL, &d0));
	ck_assert_str_eq(vdi_server_device_name(d0), P.name);
	TL_OK(vdi_server_open_device(P.s, P.dev[1], &d1));
	ck_assert_str_eq(vdi_server_device_name(d1), P.dev[1]);
	P.sd[0] = d0;
	P.sd[1] = d1;
	P.sd[2] = d;
	TL_RC(vdi_server_open_device(P.s, NULL, &d), VD_E_OPEN);
	TL_OK(tl_agent_start(&P.agent, P.s));
	/* Every slot is named now: an unknown name is INVALID (D15). */
	struct vdi_client_device *cd = NULL;
	TL_RC(vdi_client_open_device(P.c, "no-such-device", &cd), VD_E_INVALID);
	ck_assert_ptr_null(cd);
	TL_OK(vdi_client_open_device(P.c, P.dev[2], &P.cd[2]));
	ck_assert_str_eq(vdi_client_device_name(P.cd[2]), P.dev[2]);
	ck_assert_ptr_eq(vdi_client_device_set(P.cd[2]), P.c);
	tl_cmd_init(&CMDS[0], VDC_Flush, 0, 0, NULL);
	TL_OK(vdi_server_send_command(P.sd[2], &CMDS[0].cmd));
	TL_OK(vdi_client_get_command(P.cd[2], WAIT_MS, &cmd));
	ck_assert_int_eq(cmd->commandCode, VDC_Flush);
	TL_OK(vdi_client_complete_command(P.cd[2], cmd, 0, 0, 0));
	TL_OK(tl_cmd_wait(&CMDS[0], WAIT_MS));
	ck_assert_uint_eq(CMDS[0].code, 0);
}
END_TEST

/* D15: whichever side names a device first registers the name; the
 * other side's OpenDevice of that name reaches the same device. */
START_TEST(client_names_device_first)
{
	struct vdi_client_device *cd = NULL, *bad = NULL;
	struct vdi_server_device *sd = NULL;
	VDC_Command *cmd = NULL;
	char longname[VDI_MAX_NAME + 2];

	setup_multi(3);
	TL_OK(tl_pair_advance(&P, TL_INITIALIZING));
	/* Device names obey the set-name rules. */
	memset(longname, 'd', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	TL_RC(vdi_client_open_device(P.c, longname, &bad), VD_E_INVALID);
	TL_RC(vdi_client_open_device(P.c, "", &bad), VD_E_INVALID);
	TL_RC(vdi_client_open_device(P.c, "a/b", &bad), VD_E_INVALID);
	ck_assert_ptr_null(bad);
	TL_OK(vdi_client_open_device(P.c, "stripe-two", &cd));
	ck_assert_str_eq(vdi_client_device_name(cd), "stripe-two");
	TL_OK(vdi_server_open_device(P.s, "stripe-two", &sd));
	ck_assert_str_eq(vdi_server_device_name(sd), "stripe-two");
	TL_OK(tl_agent_start(&P.agent, P.s));
	tl_cmd_init(&CMDS[0], VDC_Flush, 0, 77, NULL);
	TL_OK(vdi_server_send_command(sd, &CMDS[0].cmd));
	TL_OK(vdi_client_get_command(cd, WAIT_MS, &cmd));
	ck_assert_int_eq(cmd->position, 77);
	TL_OK(vdi_client_complete_command(cd, cmd, 0, 0, 0));
	TL_OK(tl_cmd_wait(&CMDS[0], WAIT_MS));
}
END_TEST

/* Client OpenDevice per device (D3): a device already open is PROTOCOL
 * while others are not; VD_E_OPEN once all are; the loop terminator. */
START_TEST(client_open_device_per_device)
{
	struct vdi_client_device *d = NULL;
	uint32_t n = 3;
	int rc;

	setup_multi(n);
	TL_OK(tl_pair_advance(&P, TL_SERVER_OPEN));
	TL_OK(vdi_client_open_device(P.c, P.dev[0], &P.cd[0]));
	d = (struct vdi_client_device *)&rc;
	TL_RC(vdi_client_open_device(P.c, P.dev[0], &d), PROT);
	ck_assert_ptr_null(d);
	/* The set is Active and device 1 still opens. */
	TL_OK(vdi_client_open_device(P.c, P.dev[1], &P.cd[1]));
	ck_assert_ptr_ne(P.cd[0], P.cd[1]);
	TL_RC(vdi_client_open_device(P.c, P.dev[1], &d), PROT);
	/* Loop until VD_E_OPEN, as the spec allows. */
	uint32_t opened = 2;
	for (uint32_t i = 2; i < n + 2; i++) {
		rc = vdi_client_open_device(P.c, P.dev[i < n ? i : 0], &P.cd[i < n ? i : 0]);
		if (rc == VD_E_OPEN)
			break;
		ck_assert_msg(rc == 0, "OpenDevice %u = %s", i, vdi_strerror(rc));
		opened++;
	}
	ck_assert_uint_eq(opened, n);
	TL_RC(vdi_client_open_device(P.c, P.dev[1], &d), VD_E_OPEN);
}
END_TEST

/* Multi-device termination (D17): the client is not Normally Terminated
 * until every device returned VD_E_CLOSE; a device closed while others
 * are not keeps the set Active. */
START_TEST(multi_device_termination)
{
	VDC_Command *cmd = NULL;
	VDConfig cfg;

	setup_multi(2);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	TL_OK(vdi_server_close_device(P.sd[0]));
	TL_RC(vdi_server_close_device(P.sd[0]), VD_E_CLOSE); /* twice */
	TL_RC(vdi_client_get_command(P.cd[0], WAIT_MS, &cmd), VD_E_CLOSE);
	/* Device 1 still works. */
	tl_cmd_init(&CMDS[0], VDC_Flush, 0, 0, NULL);
	TL_OK(vdi_server_send_command(P.sd[1], &CMDS[0].cmd));
	/* Device 0 is closed: sending on it fails with the D8 callback. */
	tl_cmd_init(&CMDS[1], VDC_Flush, 0, 0, NULL);
	TL_RC(vdi_server_send_command(P.sd[0], &CMDS[1].cmd), PROT);
	ck_assert_int_eq(tl_cmd_calls(&CMDS[1]), 1);
	ck_assert_uint_eq(CMDS[1].code, ERROR_INVALID_HANDLE);
	TL_OK(vdi_client_get_command(P.cd[1], WAIT_MS, &cmd));
	TL_OK(vdi_client_complete_command(P.cd[1], cmd, 0, 0, 0));
	TL_OK(tl_cmd_wait(&CMDS[0], WAIT_MS));
	/* The agent keeps running while device 1 is open. */
	tl_sleep_ms(50);
	ck_assert(!tl_agent_returned(&P.agent));
	TL_OK(vdi_client_get_configuration(P.c, 0, &cfg));
	TL_OK(vdi_server_close_device(P.sd[1]));
	TL_RC(vdi_client_get_command(P.cd[1], WAIT_MS, &cmd), VD_E_CLOSE);
	TL_OK(tl_agent_join(&P.agent, WAIT_MS));
	ck_assert_int_eq(P.agent.rc, 0);
	/* Now NT: GetCommand is PROTOCOL on both devices. */
	TL_RC(vdi_client_get_command(P.cd[0], 0, &cmd), PROT);
	TL_RC(vdi_client_get_command(P.cd[1], 0, &cmd), PROT);
	close_both_released();
}
END_TEST

/* Devices the server closed before the client opened them (D17): the
 * client still opens one while it is not Normally Terminated (Active
 * with no device done yet counts as not done) and is told VD_E_CLOSE;
 * from then on every device it opened returned VD_E_CLOSE and the
 * server closed them all, so the client is Normally Terminated and the
 * table's OpenDevice cell holds for the devices never opened:
 * VD_E_PROTOCOL, *ppVirtualDevice NULL.  (Found by fuzz_shm, whose
 * contract had expected success.) */
START_TEST(open_device_after_server_closed_it)
{
	struct vdi_client_device *d;
	VDC_Command *cmd = NULL;
	int rc;

	setup_multi(3);
	TL_OK(tl_pair_advance(&P, TL_SERVER_OPEN));
	for (uint32_t i = 0; i < 3; i++)
		TL_OK(vdi_server_close_device(P.sd[i]));
	TL_OK(tl_agent_join(&P.agent, WAIT_MS));
	ck_assert_int_eq(P.agent.rc, 0);
	/* Not NT yet: the first device opens, and is closed. */
	TL_OK(vdi_client_open_device(P.c, P.dev[1], &P.cd[1]));
	ck_assert_ptr_nonnull(P.cd[1]);
	TL_RC(vdi_client_get_command(P.cd[1], WAIT_MS, &cmd), VD_E_CLOSE);
	ck_assert_ptr_null(cmd);
	/* Every opened device saw VD_E_CLOSE and the server closed all. */
	for (uint32_t i = 0; i < 3; i += 2) {
		d = (struct vdi_client_device *)&rc;
		TL_RC(vdi_client_open_device(P.c, P.dev[i], &d), PROT);
		ck_assert_ptr_null(d);
		ck_assert_msg(strstr(vdi_last_error(), vdi_set_state_name(VDI_SET_TERMINATED)),
		              "%s", vdi_last_error());
	}
	TL_RC(vdi_client_get_command(P.cd[1], 0, &cmd), PROT);
	close_both_released();
}
END_TEST

/* CPU time of one thread in ms. */
static uint64_t thread_cpu_ms(pthread_t t)
{
	struct timespec ts;
	clockid_t clk;

	ck_assert_int_eq(pthread_getcpuclockid(t, &clk), 0);
	ck_assert_int_eq(clock_gettime(clk, &ts), 0);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The server closes a device while the client holds a command of it
 * (D17): the client is told VD_E_CLOSE once it fetched everything, but
 * it is not Normally Terminated while it holds the command.  Meanwhile
 * the agent sleeps (it used to spin on Normally Terminated, at 100% CPU,
 * and so never ran its watch of dead clients and serverTimeOut); the
 * held command still completes, with the client's code, and only then
 * does the agent return and the client terminate.  The agent thread's
 * own CPU clock is read, so that no other thread (a sanitizer's among
 * them) counts: sleeping in 100 ms slices it spends about a millisecond
 * in the 500 ms window, a spin would spend what the scheduler gives it,
 * far above the 100 ms limit even on a busy machine. */
START_TEST(held_command_after_server_close)
{
	VDC_Command *cmd = NULL, *again = NULL;
	uint64_t cpu0;

	setup_multi(1);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	tl_cmd_init(&CMDS[0], VDC_Flush, 0, 0, NULL);
	TL_OK(vdi_server_send_command(P.sd[0], &CMDS[0].cmd));
	TL_OK(vdi_client_get_command(P.cd[0], WAIT_MS, &cmd));
	TL_OK(vdi_server_close_device(P.sd[0]));
	TL_RC(vdi_client_get_command(P.cd[0], WAIT_MS, &again), VD_E_CLOSE);
	cpu0 = thread_cpu_ms(P.agent.thread);
	tl_sleep_ms(500);
	cpu0 = thread_cpu_ms(P.agent.thread) - cpu0;
	ck_assert_msg(cpu0 < 100,
	              "the agent spent %llu ms of CPU in 500 ms while one command is held",
	              (unsigned long long)cpu0);
	ck_assert(!tl_agent_returned(&P.agent));
	ck_assert_int_eq(tl_cmd_calls(&CMDS[0]), 0);
	TL_OK(vdi_client_complete_command(P.cd[0], cmd, ERROR_DISK_FULL, 0, 0));
	TL_OK(tl_cmd_wait(&CMDS[0], WAIT_MS));
	ck_assert_uint_eq(CMDS[0].code, ERROR_DISK_FULL);
	TL_OK(tl_agent_join(&P.agent, WAIT_MS));
	ck_assert_int_eq(P.agent.rc, 0);
	/* Now Normally Terminated. */
	TL_RC(vdi_client_get_command(P.cd[0], 0, &again), PROT);
	close_both_released();
}
END_TEST

/* A client that Closes while it holds a command of a closed device left
 * a device open (D4): VD_E_OPEN, the set aborts, and the server's
 * routine runs once with ERROR_OPERATION_ABORTED instead of never. */
START_TEST(close_holding_command_after_server_close)
{
	VDC_Command *cmd = NULL, *again = NULL;

	setup_multi(1);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	tl_cmd_init(&CMDS[0], VDC_Flush, 0, 0, NULL);
	TL_OK(vdi_server_send_command(P.sd[0], &CMDS[0].cmd));
	TL_OK(vdi_client_get_command(P.cd[0], WAIT_MS, &cmd));
	TL_OK(vdi_server_close_device(P.sd[0]));
	TL_RC(vdi_client_get_command(P.cd[0], WAIT_MS, &again), VD_E_CLOSE);
	P.client_closed = 1;
	TL_RC(vdi_client_close(P.c), VD_E_OPEN);
	memset(P.cd, 0, sizeof(P.cd));
	TL_OK(tl_cmd_wait(&CMDS[0], WAIT_MS));
	ck_assert_uint_eq(CMDS[0].code, ERROR_OPERATION_ABORTED);
	/* The agent returns NOERROR on abort too (spec: its only code). */
	TL_OK(tl_agent_join(&P.agent, WAIT_MS));
	ck_assert_int_eq(P.agent.rc, 0);
	ck_assert_int_eq(tl_cmd_calls(&CMDS[0]), 1);
}
END_TEST

/* Normal end through the helper; nothing left in /dev/shm. */
START_TEST(normal_end_releases_everything)
{
	setup_multi(4);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	/* The control region and buffer area 0 at least. */
	ck_assert_int_ge(tl_shm_count_set(P.name), 2);
	TL_OK(tl_pair_finish(&P));
	ck_assert_int_eq(tl_shm_count_set(P.name), 0);
}
END_TEST

/* ---------------------------------------------------------------------
 * Close with open devices (D4).
 */
START_TEST(client_close_with_open_device)
{
	VDC_Command *cmd = NULL;
	VDConfig cfg;

	setup_multi(2);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	/* Device 0 saw VD_E_CLOSE, device 1 did not: still open. */
	TL_OK(vdi_server_close_device(P.sd[0]));
	TL_RC(vdi_client_get_command(P.cd[0], WAIT_MS, &cmd), VD_E_CLOSE);
	P.client_closed = 1;
	TL_RC(vdi_client_close(P.c), VD_E_OPEN);
	memset(P.cd, 0, sizeof(P.cd));
	/* The internal abort reached the server. */
	TL_RC(vdi_server_get_configuration(P.s, &cfg), ABRT);
	TL_OK(tl_agent_join(&P.agent, WAIT_MS));
	tl_cmd_init(&CMDS[0], VDC_Flush, 0, 0, NULL);
	TL_RC(vdi_server_send_command(P.sd[1], &CMDS[0].cmd), ABRT);
	ck_assert_uint_eq(CMDS[0].code, ERROR_OPERATION_ABORTED);
	/* The client object is back in DNE. */
	TL_RC(vdi_client_get_configuration(P.c, 0, &cfg), PROT);
}
END_TEST

START_TEST(server_close_with_open_device)
{
	VDC_Command *cmd = NULL, *held = NULL;
	uint64_t t0;

	setup_multi(1);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	send_write(0, 0);
	TL_OK(vdi_client_get_command(P.cd[0], WAIT_MS, &held));
	P.server_closed = 1;
	TL_RC(vdi_server_close(P.s), PROT);
	memset(P.sd, 0, sizeof(P.sd));
	/* The outstanding command was completed with 995 (callback ran). */
	ck_assert_int_eq(tl_cmd_calls(&CMDS[0]), 1);
	ck_assert_uint_eq(CMDS[0].code, ERROR_OPERATION_ABORTED);
	TL_OK(tl_agent_join(&P.agent, WAIT_MS));
	/* The client sees the abort at once. */
	t0 = tl_now_ms();
	TL_RC(vdi_client_get_command(P.cd[0], 5000, &cmd), ABRT);
	ck_assert_uint_lt(tl_now_ms() - t0, 1000);
	ck_assert_ptr_null(cmd);
	TL_RC(vdi_client_complete_command(P.cd[0], held, 0, 0, 0), ABRT);
}
END_TEST

/* ---------------------------------------------------------------------
 * Abort: every outstanding command ends with 995, waits wake (spec 2.5).
 */
static void *blocked_get_command(void *arg)
{
	VDC_Command *cmd = NULL;
	intptr_t rc = vdi_client_get_command(arg, VDI_INFINITE, &cmd);

	return (void *)rc;
}

START_TEST(abort_wakes_and_completes)
{
	pthread_t th;
	void *ret;
	uint64_t t0;

	setup_multi(2);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	send_write(0, 0);
	send_write(0, 1);
	/* Device 1: a GetCommand blocked forever. */
	ck_assert_int_eq(pthread_create(&th, NULL, blocked_get_command, P.cd[1]), 0);
	tl_sleep_ms(50);
	t0 = tl_now_ms();
	TL_OK(vdi_server_signal_abort(P.s));
	ck_assert_int_eq(pthread_join(th, &ret), 0);
	ck_assert_int_eq((int)(intptr_t)ret, ABRT);
	ck_assert_uint_lt(tl_now_ms() - t0, 1000);
	TL_OK(tl_cmd_wait(&CMDS[0], WAIT_MS));
	TL_OK(tl_cmd_wait(&CMDS[1], WAIT_MS));
	ck_assert_uint_eq(CMDS[0].code, ERROR_OPERATION_ABORTED);
	ck_assert_uint_eq(CMDS[1].code, ERROR_OPERATION_ABORTED);
	TL_OK(tl_agent_join(&P.agent, WAIT_MS));
	/* Exactly once each. */
	ck_assert_int_eq(tl_cmd_calls(&CMDS[0]), 1);
	ck_assert_int_eq(tl_cmd_calls(&CMDS[1]), 1);
	/* Abort is sticky, for the client too (D5). */
	VDConfig cfg;
	TL_RC(vdi_client_get_configuration(P.c, 0, &cfg), ABRT);
	TL_RC(vdi_client_signal_abort(P.c), 0);
	TL_RC(vdi_server_signal_abort(P.s), 0);
}
END_TEST

/* Waits end at their timeout; VDI_INFINITE and negative values (D13)
 * wait until the event. */
struct waiter {
	struct tl_pair *p;
	uint32_t timeout;
	int which; /* 0: GetConfiguration, 1: GetCommand */
	int rc;
	VDConfig cfg;
	VDC_Command *cmd;
};

static void *waiter_main(void *arg)
{
	struct waiter *w = arg;

	if (w->which == 0)
		w->rc = vdi_client_get_configuration(w->p->c, w->timeout, &w->cfg);
	else
		w->rc = vdi_client_get_command(w->p->cd[0], w->timeout, &w->cmd);
	return NULL;
}

START_TEST(waits_time_out)
{
	struct waiter w = { .p = &P };
	pthread_t th;
	VDConfig cfg;
	VDC_Command *cmd;
	uint64_t t0, dt;

	setup_multi(1);
	TL_OK(tl_pair_advance(&P, TL_CONFIGURABLE));
	t0 = tl_now_ms();
	TL_RC(vdi_client_get_configuration(P.c, 150, &cfg), VD_E_TIMEOUT);
	dt = tl_now_ms() - t0;
	ck_assert_msg(dt >= 140 && dt < 2000, "GetConfiguration(150) took %llu ms",
	              (unsigned long long)dt);
	/* Infinite wait released by EndConfiguration. */
	w.which = 0;
	w.timeout = VDI_INFINITE;
	ck_assert_int_eq(pthread_create(&th, NULL, waiter_main, &w), 0);
	tl_sleep_ms(100);
	TL_OK(tl_pair_advance(&P, TL_ENDED));
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	TL_OK(w.rc);
	ck_assert_uint_eq(w.cfg.maxIODepth, 4);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	t0 = tl_now_ms();
	TL_RC(vdi_client_get_command(P.cd[0], 150, &cmd), VD_E_TIMEOUT);
	dt = tl_now_ms() - t0;
	ck_assert_msg(dt >= 140 && dt < 2000, "GetCommand(150) took %llu ms",
	              (unsigned long long)dt);
	/* A negative timeout (the Linux SDK's infinite) waits for a command. */
	w.which = 1;
	w.timeout = 0x80000000u;
	ck_assert_int_eq(pthread_create(&th, NULL, waiter_main, &w), 0);
	tl_sleep_ms(200);
	tl_cmd_init(&CMDS[0], VDC_Flush, 0, 0, NULL);
	TL_OK(vdi_server_send_command(P.sd[0], &CMDS[0].cmd));
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	TL_OK(w.rc);
	ck_assert_int_eq(w.cmd->commandCode, VDC_Flush);
	TL_OK(vdi_client_complete_command(P.cd[0], w.cmd, 0, 0, 0));
	TL_OK(tl_cmd_wait(&CMDS[0], WAIT_MS));
}
END_TEST

/* ---------------------------------------------------------------------
 * Queue limit (D7) and failure callbacks (D8).
 */
START_TEST(queue_full)
{
	VDC_Command *cmd = NULL;
	const int n = VDI_QUEUE_DEPTH;

	setup_multi(2);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	for (int i = 0; i < n; i++) {
		tl_cmd_init(&CMDS[i], VDC_Flush, 0, (uint64_t)i, NULL);
		TL_OK(vdi_server_send_command(P.sd[0], &CMDS[i].cmd));
	}
	tl_cmd_init(&CMDS[n], VDC_Flush, 0, 0, NULL);
	TL_RC(vdi_server_send_command(P.sd[0], &CMDS[n].cmd), VD_E_QUEUE_FULL);
	/* D8: routine ran once, synchronously, on this thread. */
	ck_assert_int_eq(tl_cmd_calls(&CMDS[n]), 1);
	ck_assert(pthread_equal(CMDS[n].thread, pthread_self()));
	ck_assert_uint_eq(CMDS[n].code, ERROR_NO_SYSTEM_RESOURCES);
	ck_assert_ptr_eq(CMDS[n].context_seen, &CMDS[n]);
	/* The limit is per device: device 1 still takes commands. */
	tl_cmd_init(&CMDS[n + 3], VDC_Flush, 0, 0, NULL);
	TL_OK(vdi_server_send_command(P.sd[1], &CMDS[n + 3].cmd));
	ck_assert_int_eq(tl_cmd_calls(&CMDS[n + 3]), 0);
	/* Fetched but not completed still counts as outstanding. */
	TL_OK(vdi_client_get_command(P.cd[0], WAIT_MS, &cmd));
	ck_assert_int_eq(cmd->commandCode, VDC_Flush);
	tl_cmd_init(&CMDS[n + 1], VDC_Flush, 0, 0, NULL);
	TL_RC(vdi_server_send_command(P.sd[0], &CMDS[n + 1].cmd), VD_E_QUEUE_FULL);
	/* Completing one frees one slot. */
	TL_OK(vdi_client_complete_command(P.cd[0], cmd, 0, 0, 0));
	TL_OK(tl_cmd_wait(&CMDS[0], WAIT_MS));
	tl_cmd_init(&CMDS[n + 2], VDC_Flush, 0, 0, NULL);
	TL_OK(vdi_server_send_command(P.sd[0], &CMDS[n + 2].cmd));
	/* The failed commands were never delivered nor called again. */
	tl_sleep_ms(20);
	ck_assert_int_eq(tl_cmd_calls(&CMDS[n]), 1);
	ck_assert_int_eq(tl_cmd_calls(&CMDS[n + 1]), 1);
	/* The client may take several and complete them out of order (D7). */
	VDC_Command *a = NULL, *b = NULL;
	TL_OK(vdi_client_get_command(P.cd[0], WAIT_MS, &a));
	TL_OK(vdi_client_get_command(P.cd[0], WAIT_MS, &b));
	ck_assert_int_eq(a->position, 1);
	ck_assert_int_eq(b->position, 2);
	TL_OK(vdi_client_complete_command(P.cd[0], b, 0, 0, 22));
	TL_OK(tl_cmd_wait(&CMDS[2], WAIT_MS));
	ck_assert_int_eq(tl_cmd_calls(&CMDS[1]), 0);
	TL_OK(vdi_client_complete_command(P.cd[0], a, 0, 0, 11));
	TL_OK(tl_cmd_wait(&CMDS[1], WAIT_MS));
	ck_assert_uint_eq(CMDS[1].out_position, 11);
	ck_assert_uint_eq(CMDS[2].out_position, 22);
}
END_TEST

/* Malformed commands: VD_E_INVALID with callback 87; NULL command or
 * routine: VD_E_INVALID without callback (D8, D11). */
START_TEST(send_command_invalid)
{
	uint8_t *b = NULL;
	struct {
		uint32_t code, size;
		int with_buffer;
	} bad[] = {
		{ 0, 0, 0 },                 /* code below 1 */
		{ VDC_MAX_CODE + 1, 0, 0 },  /* code above 19 */
		{ VDC_Write, 0, 1 },         /* empty write */
		{ VDC_Write, 100, 1 },       /* not a blockSize multiple */
		{ VDC_Write, 65536 * 2, 1 }, /* above maxTransferSize */
		{ VDC_Read, 512, 0 },        /* no buffer */
		{ VDC_Write, 512, 2 },       /* not a shared buffer */
	};

	setup_multi(1);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	TL_OK(vdi_server_allocate_buffer(P.s, &b, 65536, 0));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		static uint8_t local[512];

		tl_cmd_init(&CMDS[i], bad[i].code, bad[i].size, 0,
		            bad[i].with_buffer == 1   ? b
		            : bad[i].with_buffer == 2 ? local
		                                      : NULL);
		int rc = vdi_server_send_command(P.sd[0], &CMDS[i].cmd);
		ck_assert_msg(rc == VD_E_INVALID, "bad command %zu = %s", i, vdi_strerror(rc));
		ck_assert_int_eq(tl_cmd_calls(&CMDS[i]), 1);
		ck_assert_uint_eq(CMDS[i].code, ERROR_INVALID_PARAMETER);
	}
	TL_RC(vdi_server_send_command(P.sd[0], NULL), VD_E_INVALID);
	tl_cmd_init(&CMDS[10], VDC_Flush, 0, 0, NULL);
	CMDS[10].cmd.completionRoutine = NULL;
	TL_RC(vdi_server_send_command(P.sd[0], &CMDS[10].cmd), VD_E_INVALID);
	ck_assert_int_eq(CMDS[10].calls, 0);
	/* Nothing reached the client. */
	VDC_Command *cmd;
	TL_RC(vdi_client_get_command(P.cd[0], 0, &cmd), VD_E_TIMEOUT);
}
END_TEST

/* Completion data travels back: code, bytes, position; every command
 * code 1..19 is carried with its size and position (D11). */
START_TEST(all_command_codes_round_trip)
{
	VDC_Command *cmd = NULL;
	uint8_t *b = NULL;

	setup_multi(1);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	TL_OK(vdi_server_allocate_buffer(P.s, &b, 65536, 0));
	for (uint32_t code = VDC_MIN_CODE; code <= VDC_MAX_CODE; code++) {
		int data = code == VDC_Read || code == VDC_Write;
		uint32_t size = data ? 4096 : code;

		tl_cmd_init(&CMDS[code], code, size, 1000 + code, data ? b : NULL);
		TL_OK(vdi_server_send_command(P.sd[0], &CMDS[code].cmd));
		TL_OK(vdi_client_get_command(P.cd[0], WAIT_MS, &cmd));
		ck_assert_int_eq(cmd->commandCode, (int32_t)code);
		ck_assert_int_eq(cmd->size, (int32_t)size);
		ck_assert_int_eq(cmd->position, 1000 + code);
		if (data)
			ck_assert_ptr_nonnull(cmd->buffer);
		else
			ck_assert_ptr_null(cmd->buffer);
		TL_OK(vdi_client_complete_command(P.cd[0], cmd, 7000 + code, data ? 2048 : 0,
		                                  5000 + code));
		TL_OK(tl_cmd_wait(&CMDS[code], WAIT_MS));
		ck_assert_uint_eq(CMDS[code].code, 7000 + code);
		ck_assert_uint_eq(CMDS[code].bytes, data ? 2048 : 0);
		ck_assert_uint_eq(CMDS[code].out_position, 5000 + code);
		ck_assert_ptr_eq(CMDS[code].context_seen, &CMDS[code]);
		ck_assert(!pthread_equal(CMDS[code].thread, pthread_self()));
	}
}
END_TEST

/* ---------------------------------------------------------------------
 * CompleteCommand with a pointer that is not outstanding (D21).
 */
START_TEST(complete_foreign_pointer)
{
	VDC_Command *cmd = NULL, *other = NULL;
	VDC_Command fake;

	setup_multi(2);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	send_write(0, 0);
	TL_OK(vdi_client_get_command(P.cd[0], WAIT_MS, &cmd));
	/* A copy on the stack is not the command. */
	fake = *cmd;
	TL_RC(vdi_client_complete_command(P.cd[0], &fake, 0, 65536, 0), VD_E_INVALID);
	TL_RC(vdi_client_complete_command(P.cd[0], NULL, 0, 65536, 0), VD_E_INVALID);
	/* Device 0's command completed on device 1. */
	TL_RC(vdi_client_complete_command(P.cd[1], cmd, 0, 65536, 0), VD_E_INVALID);
	ck_assert_int_eq(tl_cmd_calls(&CMDS[0]), 0);
	/* More bytes than the command carries: refused, and the command
	 * stays outstanding (the client's own argument, not a peer's). */
	TL_RC(vdi_client_complete_command(P.cd[0], cmd, 0, 65537, 0), VD_E_INVALID);
	ck_assert_int_eq(tl_cmd_calls(&CMDS[0]), 0);
	TL_OK(vdi_client_complete_command(P.cd[0], cmd, 0, 65536, 0));
	TL_OK(tl_cmd_wait(&CMDS[0], WAIT_MS));
	ck_assert_uint_eq(CMDS[0].bytes, 65536);
	/* Completed once: a second time is INVALID and not delivered (D21). */
	TL_RC(vdi_client_complete_command(P.cd[0], cmd, 0, 65536, 0), VD_E_INVALID);
	tl_sleep_ms(20);
	ck_assert_int_eq(tl_cmd_calls(&CMDS[0]), 1);
	/* The set still works. */
	send_write(1, 1);
	TL_OK(vdi_client_get_command(P.cd[1], WAIT_MS, &other));
	TL_OK(vdi_client_complete_command(P.cd[1], other, 0, 65536, 0));
	TL_OK(tl_cmd_wait(&CMDS[1], WAIT_MS));
}
END_TEST

/* ---------------------------------------------------------------------
 * Secondaries (D22, D17).
 */
START_TEST(secondary_readiness)
{
	struct vdi_client *sec = NULL, *sec2 = NULL;
	struct vdi_client_device *d = NULL;
	VDConfig cfg;
	VDC_Command *cmd = NULL;
	char missing[TL_NAME_MAX];

	setup_multi(2);
	TL_OK(vdi_client_new(&sec));
	/* No such set. */
	TL_RC(vdi_client_open_in_secondary(sec, tl_name(missing)), PROT);
	TL_OK(tl_pair_advance(&P, TL_CREATED));
	TL_RC(vdi_client_open_in_secondary(sec, P.name), PROT);
	TL_OK(tl_pair_advance(&P, TL_CONFIGURABLE));
	TL_RC(vdi_client_open_in_secondary(sec, P.name), PROT);
	/* Ready once the server ended configuration, even before the
	 * primary's GetConfiguration (D22). */
	TL_OK(tl_pair_advance(&P, TL_ENDED));
	TL_OK(vdi_client_open_in_secondary(sec, P.name));
	TL_RC(vdi_client_open_in_secondary(sec, P.name), PROT); /* in use */
	TL_RC(vdi_client_create(sec, P.name, &P.req), PROT);
	TL_OK(vdi_client_get_configuration(sec, WAIT_MS, &cfg));
	ck_assert_uint_eq(cfg.deviceCount, 2);
	ck_assert_uint_eq(cfg.features & VDF_WriteMedia, VDF_WriteMedia);
	TL_OK(tl_pair_advance(&P, TL_SERVER_OPEN));
	/* Primary drives device 0, the secondary device 1. */
	TL_OK(vdi_client_get_configuration(P.c, WAIT_MS, &cfg));
	TL_OK(vdi_client_open_device(P.c, P.dev[0], &P.cd[0]));
	TL_OK(vdi_client_open_device(sec, P.dev[1], &d));
	send_write(1, 0);
	TL_OK(vdi_client_get_command(d, WAIT_MS, &cmd));
	ck_assert_int_eq(cmd->buffer[100], 0x5A);
	TL_OK(vdi_client_complete_command(d, cmd, 0, 65536, 0));
	TL_OK(tl_cmd_wait(&CMDS[0], WAIT_MS));
	TL_OK(vdi_server_close_device(P.sd[1]));
	TL_RC(vdi_client_get_command(d, WAIT_MS, &cmd), VD_E_CLOSE);
	/* Close in a secondary only detaches (D17). */
	TL_OK(vdi_client_close(sec));
	ck_assert_int_gt(tl_shm_count_set(P.name), 0);
	send_write(0, 1);
	TL_OK(vdi_client_get_command(P.cd[0], WAIT_MS, &cmd));
	TL_OK(vdi_client_complete_command(P.cd[0], cmd, 0, 65536, 0));
	TL_OK(tl_cmd_wait(&CMDS[1], WAIT_MS));
	/* Aborted: ABORT for a new secondary. */
	TL_OK(vdi_client_signal_abort(P.c));
	TL_OK(vdi_client_new(&sec2));
	TL_RC(vdi_client_open_in_secondary(sec2, P.name), ABRT);
	vdi_client_free(sec2);
	vdi_client_free(sec);
}
END_TEST

/* OpenInSecondaryEx finds the set in its instance only. */
START_TEST(secondary_in_instance)
{
	struct tl_pair_opts o;
	struct vdi_client *sec = NULL;
	VDConfig cfg;

	tl_pair_opts_default(&o);
	o.instance = tl_instance();
	o.timeout_ms = WAIT_MS;
	ck_assert_int_eq(tl_pair_init(&P, &o), 0);
	TL_OK(tl_pair_advance(&P, TL_INITIALIZING));
	TL_OK(vdi_client_new(&sec));
	TL_RC(vdi_client_open_in_secondary(sec, P.name), PROT);
	TL_RC(vdi_client_open_in_secondary_ex(sec, "OTHER", P.name), PROT);
	TL_RC(vdi_client_open_in_secondary_ex(sec, "bad-inst", P.name), VD_E_INSTANCE_NAME);
	TL_OK(vdi_client_open_in_secondary_ex(sec, tl_instance(), P.name));
	TL_OK(vdi_client_get_configuration(sec, 0, &cfg));
	ck_assert_uint_eq(cfg.features, VDF_WriteMedia);
	TL_OK(vdi_client_close(sec));
	vdi_client_free(sec);
}
END_TEST

/* ---------------------------------------------------------------------
 * Buffer handles (D24).
 */
START_TEST(buffer_handles)
{
	VDC_Command *cmd = NULL;
	uint32_t h = 0, h2 = 0;
	uint8_t *addr = NULL;
	struct vdi_client *sec = NULL;

	setup_multi(1);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	send_write(0, 0);
	TL_OK(vdi_client_get_command(P.cd[0], WAIT_MS, &cmd));
	TL_OK(vdi_client_get_buffer_handle(P.c, cmd->buffer, &h));
	ck_assert_uint_ne(h, 0);
	ck_assert_uint_ge(h >> 24, 1); /* area + 1 */
	TL_OK(vdi_client_map_buffer_handle(P.c, h, &addr));
	ck_assert_ptr_eq(addr, cmd->buffer);
	/* Not the data start of a held command. */
	TL_RC(vdi_client_get_buffer_handle(P.c, cmd->buffer + 1, &h2), VD_E_INVALID);
	TL_RC(vdi_client_get_buffer_handle(P.c, NULL, &h2), VD_E_INVALID);
	TL_RC(vdi_client_map_buffer_handle(P.c, 0, &addr), VD_E_INVALID);
	TL_RC(vdi_client_map_buffer_handle(P.c, h + 0x10000000u, &addr), VD_E_INVALID);
	/* D30: only the handle given out maps, not the buffer + 512. */
	TL_RC(vdi_client_map_buffer_handle(P.c, h + 1, &addr), VD_E_INVALID);
	/* Another client object of the set (secondary) maps the same bytes. */
	TL_OK(vdi_client_new(&sec));
	TL_OK(vdi_client_open_in_secondary(sec, P.name));
	TL_OK(vdi_client_map_buffer_handle(sec, h, &addr));
	ck_assert_int_eq(addr[0], 0x5A);
	ck_assert_int_eq(memcmp(addr, cmd->buffer, 65536), 0);
	addr[7] = 0x11;
	ck_assert_int_eq(cmd->buffer[7], 0x11);
	vdi_client_free(sec);
	uint8_t *data = cmd->buffer; /* cmd is invalid once completed */
	TL_OK(vdi_client_complete_command(P.cd[0], cmd, 0, 65536, 0));
	TL_OK(tl_cmd_wait(&CMDS[0], WAIT_MS));
	/* The buffer written through the client is the server's buffer. */
	ck_assert_int_eq(CMDS[0].cmd.buffer[7], 0x11);
	/* Completed: no longer a buffer this process holds (D24), and its
	 * handle maps no more, in any process (D30). */
	TL_RC(vdi_client_get_buffer_handle(P.c, data, &h2), VD_E_INVALID);
	TL_RC(vdi_client_map_buffer_handle(P.c, h, &addr), VD_E_INVALID);
}
END_TEST

/* ---------------------------------------------------------------------
 * Return codes (spec 8) and ABI (spec 4, 6.2).
 */
START_TEST(error_values_and_names)
{
	static const struct {
		int rc;
		long long value;
		const char *name;
	} t[] = {
		{ NOERROR, 0, "NOERROR" },
		{ VD_E_NOTOPEN, -2139684862LL, "VD_E_NOTOPEN" },
		{ VD_E_TIMEOUT, -2139684861LL, "VD_E_TIMEOUT" },
		{ VD_E_ABORT, -2139684860LL, "VD_E_ABORT" },
		{ VD_E_SECURITY, -2139684859LL, "VD_E_SECURITY" },
		{ VD_E_INVALID, -2139684858LL, "VD_E_INVALID" },
		{ VD_E_INSTANCE_NAME, -2139684857LL, "VD_E_INSTANCE_NAME" },
		{ VD_E_NOTSUPPORTED, -2139684855LL, "VD_E_NOTSUPPORTED" },
		{ VD_E_MEMORY, -2139684854LL, "VD_E_MEMORY" },
		{ VD_E_UNEXPECTED, -2139684853LL, "VD_E_UNEXPECTED" },
		{ VD_E_PROTOCOL, -2139684852LL, "VD_E_PROTOCOL" },
		{ VD_E_OPEN, -2139684851LL, "VD_E_OPEN" },
		{ VD_E_CLOSE, -2139684850LL, "VD_E_CLOSE" },
		{ VD_E_BUSY, -2139684849LL, "VD_E_BUSY" },
		{ VD_E_QUEUE_FULL, (int)0x80770010, "VD_E_QUEUE_FULL" },
		{ VD_E_IO_ERROR, (int)0x80770011, "VD_E_IO_ERROR" },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		ck_assert_msg((long long)t[i].rc == t[i].value, "%s = %d", t[i].name, t[i].rc);
		ck_assert_str_eq(vdi_strerror(t[i].rc), t[i].name);
	}
	ck_assert_int_eq(VD_E_ABORT, (int)0x80770004);
	ck_assert_str_eq(vdi_strerror((int)0x80770099), "0x80770099");
	ck_assert_str_eq(vdi_strerror((int)0x80770008), "0x80770008");
	ck_assert_str_eq(vdi_strcompletion(ERROR_OPERATION_ABORTED), "ERROR_OPERATION_ABORTED");
	ck_assert_str_eq(vdi_strcompletion(ERROR_SUCCESS), "ERROR_SUCCESS");
	ck_assert_str_eq(vdi_strcompletion(ERROR_HANDLE_EOF), "ERROR_HANDLE_EOF");
	ck_assert_str_eq(vdi_strcompletion(12345), "ERROR_12345");
	ck_assert_str_eq(vdi_strcommand(VDC_Write), "VDC_Write");
	ck_assert_str_eq(vdi_strcommand(VDC_Complete), "VDC_Complete");
	ck_assert_str_eq(vdi_strcommand(0), "VDC_0");
	ck_assert_str_eq(vdi_strcommand(20), "VDC_20");
	/* Win32 completion codes (spec 6.6). */
	ck_assert_int_eq(ERROR_INVALID_HANDLE, 6);
	ck_assert_int_eq(ERROR_HANDLE_EOF, 38);
	ck_assert_int_eq(ERROR_NOT_SUPPORTED, 50);
	ck_assert_int_eq(ERROR_INVALID_PARAMETER, 87);
	ck_assert_int_eq(ERROR_DISK_FULL, 112);
	ck_assert_int_eq(ERROR_OPERATION_ABORTED, 995);
	ck_assert_int_eq(ERROR_END_OF_MEDIA, 1100);
	ck_assert_int_eq(ERROR_FILEMARK_DETECTED, 1101);
	ck_assert_int_eq(ERROR_NO_DATA_DETECTED, 1104);
	ck_assert_int_eq(ERROR_IO_DEVICE, 1117);
	ck_assert_int_eq(ERROR_EOM_OVERFLOW, 1129);
	ck_assert_int_eq(ERROR_NO_SYSTEM_RESOURCES, 1450);
}
END_TEST

START_TEST(abi_layout)
{
	ck_assert_uint_eq(sizeof(VDConfig), 44);
	ck_assert_uint_eq(offsetof(VDConfig, deviceCount), 0);
	ck_assert_uint_eq(offsetof(VDConfig, features), 4);
	ck_assert_uint_eq(offsetof(VDConfig, prefixZoneSize), 8);
	ck_assert_uint_eq(offsetof(VDConfig, alignment), 12);
	ck_assert_uint_eq(offsetof(VDConfig, softFileMarkBlockSize), 16);
	ck_assert_uint_eq(offsetof(VDConfig, EOMWarningSize), 20);
	ck_assert_uint_eq(offsetof(VDConfig, serverTimeOut), 24);
	ck_assert_uint_eq(offsetof(VDConfig, blockSize), 28);
	ck_assert_uint_eq(offsetof(VDConfig, maxIODepth), 32);
	ck_assert_uint_eq(offsetof(VDConfig, maxTransferSize), 36);
	ck_assert_uint_eq(offsetof(VDConfig, bufferAreaSize), 40);
#if defined(__x86_64__) || defined(__aarch64__)
	ck_assert_uint_eq(sizeof(VDC_Command), 24);
	ck_assert_uint_eq(offsetof(VDC_Command, commandCode), 0);
	ck_assert_uint_eq(offsetof(VDC_Command, size), 4);
	ck_assert_uint_eq(offsetof(VDC_Command, position), 8);
	ck_assert_uint_eq(offsetof(VDC_Command, buffer), 16);
	ck_assert_uint_eq(sizeof(VDS_Command), 56);
	ck_assert_uint_eq(offsetof(VDS_Command, commandCode), 0);
	ck_assert_uint_eq(offsetof(VDS_Command, size), 4);
	ck_assert_uint_eq(offsetof(VDS_Command, inPosition), 8);
	ck_assert_uint_eq(offsetof(VDS_Command, outPosition), 16);
	ck_assert_uint_eq(offsetof(VDS_Command, buffer), 24);
	ck_assert_uint_eq(offsetof(VDS_Command, completionRoutine), 32);
	ck_assert_uint_eq(offsetof(VDS_Command, completionContext), 40);
	ck_assert_uint_eq(offsetof(VDS_Command, completionCode), 48);
	ck_assert_uint_eq(offsetof(VDS_Command, bytesTransferred), 52);
#endif
	/* Feature and command values (spec 5, 6.1). */
	ck_assert_uint_eq((uint32_t)VDF_LikeTape,
	                  (uint32_t)(VDF_FileMarks | VDF_Removable | VDF_Rewind | VDF_Position |
	                             VDF_SkipBlocks | VDF_ReversePosition));
	ck_assert_uint_eq((uint32_t)VDF_LikeDisk, (uint32_t)VDF_RandomAccess);
	ck_assert_uint_eq((uint32_t)VDF_LatchStats, 0x80000000u);
	ck_assert_uint_eq(VDF_RequestComplete, 0x2000);
	ck_assert_uint_eq(VDF_CompleteEnabled, 0x40000);
	ck_assert_int_eq(VDC_Read, 1);
	ck_assert_int_eq(VDC_Flush, 12);
	ck_assert_int_eq(VDC_GetError, 18);
	ck_assert_int_eq(VDC_Complete, 19);
	ck_assert_int_eq(VDC_End, 2);
}
END_TEST

/* ---------------------------------------------------------------------
 * Suite.
 */
static void add_fixture_tcase(Suite *s, TCase *tc, int timeout)
{
	tcase_add_checked_fixture(tc, NULL, fixture_teardown);
	tcase_set_timeout(tc, timeout);
	suite_add_tcase(s, tc);
}

static Suite *sets_suite(void)
{
	Suite *s = suite_create("sets");
	TCase *tc;

	tc = tcase_create("per device");
	tcase_add_test(tc, server_open_device_loop);
	tcase_add_test(tc, server_open_device_by_name);
	tcase_add_test(tc, client_open_device_per_device);
	tcase_add_test(tc, client_names_device_first);
	tcase_add_test(tc, multi_device_termination);
	tcase_add_test(tc, open_device_after_server_closed_it);
	tcase_add_test(tc, held_command_after_server_close);
	tcase_add_test(tc, close_holding_command_after_server_close);
	tcase_add_test(tc, normal_end_releases_everything);
	add_fixture_tcase(s, tc, 10);

	tc = tcase_create("close and abort");
	tcase_add_test(tc, client_close_with_open_device);
	tcase_add_test(tc, server_close_with_open_device);
	tcase_add_test(tc, abort_wakes_and_completes);
	tcase_add_test(tc, waits_time_out);
	add_fixture_tcase(s, tc, 10);

	tc = tcase_create("commands");
	tcase_add_test(tc, queue_full);
	tcase_add_test(tc, send_command_invalid);
	tcase_add_test(tc, all_command_codes_round_trip);
	tcase_add_test(tc, complete_foreign_pointer);
	add_fixture_tcase(s, tc, 10);

	tc = tcase_create("secondaries and handles");
	tcase_add_test(tc, secondary_readiness);
	tcase_add_test(tc, secondary_in_instance);
	tcase_add_test(tc, buffer_handles);
	add_fixture_tcase(s, tc, 10);

	tc = tcase_create("codes and abi");
	tcase_add_test(tc, error_values_and_names);
	tcase_add_test(tc, abi_layout);
	tcase_set_timeout(tc, 5);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tl_run_suite(sets_suite());
}
