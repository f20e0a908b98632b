/* SPDX-License-Identifier: MIT */
/*
 * check_cli_misc.c - the pure helpers of `vdi`: progress line, summary
 * and mode choice (core/cli/progress.c), option number parsing and
 * command dispatch (core/cli/cli.c).
 */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "progress.h"
#include "vdi.h"

START_TEST(test_bytes)
{
	char b[32];

	progress_bytes(b, sizeof(b), 0);
	ck_assert_str_eq(b, "0 B");
	progress_bytes(b, sizeof(b), 1023);
	ck_assert_str_eq(b, "1023 B");
	progress_bytes(b, sizeof(b), 1536);
	ck_assert_str_eq(b, "1.5 KiB");
	progress_bytes(b, sizeof(b), 256.0 * 1048576);
	ck_assert_str_eq(b, "256.0 MiB");
	progress_bytes(b, sizeof(b), 3.0 * 1073741824);
	ck_assert_str_eq(b, "3.0 GiB");
}
END_TEST

START_TEST(test_line)
{
	char b[160];

	progress_line(b, sizeof(b), 128 * 1048576ull, 256 * 1048576ull, 2.0);
	ck_assert_str_eq(b, " 50%  128.0 MiB of 256.0 MiB  64.0 MiB/s  ETA 0:02");
	progress_line(b, sizeof(b), 0, 100 * 1048576ull, 0);
	ck_assert_str_eq(b, "  0%  0 B of 100.0 MiB  0 B/s");
	progress_line(b, sizeof(b), 10, 10, 1.0);
	ck_assert_str_eq(b, "100%  10 B of 10 B  10 B/s  ETA 0:00");
	progress_line(b, sizeof(b), 1048576, 0, 1.0); /* total unknown yet */
	ck_assert_str_eq(b, "1.0 MiB  1.0 MiB/s");
	progress_line(b, sizeof(b), 1, 600 * 1048576ull, 1.0);
	ck_assert_msg(strstr(b, "ETA ") != NULL, "%s", b);
	progress_line(b, sizeof(b), 1048576, 1048576 * 121ull, 1.0);
	ck_assert_str_eq(b, "  0%  1.0 MiB of 121.0 MiB  1.0 MiB/s  ETA 2:00");
}
END_TEST

START_TEST(test_summary)
{
	char b[256];

	progress_summary(b, sizeof(b), "BACKUP DATABASE db", 268435456, 2, 1.25);
	ck_assert_str_eq(
		b,
		"BACKUP DATABASE db: 268435456 bytes (256.0 MiB) in 2 stripes, 1.25 s, 204.8 MiB/s");
	progress_summary(b, sizeof(b), "RESTORE VERIFYONLY", 0, 1, 0);
	ck_assert_str_eq(b, "RESTORE VERIFYONLY: 0 bytes (0 B) in 1 stripe, 0.00 s, 0 B/s");
}
END_TEST

START_TEST(test_mode)
{
	ck_assert_int_eq(progress_mode_pick(1, 1, 1), PROGRESS_OFF);
	ck_assert_int_eq(progress_mode_pick(0, 1, 0), PROGRESS_LIVE);
	ck_assert_int_eq(progress_mode_pick(0, 1, 1), PROGRESS_LIVE);
	ck_assert_int_eq(progress_mode_pick(0, 0, 0), PROGRESS_OFF);
	ck_assert_int_eq(progress_mode_pick(0, 0, 1), PROGRESS_STATS);
}
END_TEST

/* STATS lines go to stderr: capture them through a pipe. */
START_TEST(test_stats_lines)
{
	struct progress p;
	uint64_t done = 0, total = 1000;
	int fds[2], saved = dup(2);
	char buf[512] = "";
	ssize_t n;

	ck_assert_int_eq(pipe(fds), 0);
	dup2(fds[1], 2);
	progress_start(&p, PROGRESS_STATS, &done, &total, 25);
	__atomic_store_n(&done, 600, __ATOMIC_RELAXED);
	usleep(450 * 1000);
	progress_stop(&p);
	dup2(saved, 2);
	close(fds[1]);
	n = read(fds[0], buf, sizeof(buf) - 1);
	close(fds[0]);
	ck_assert_int_gt(n, 0);
	buf[n] = '\0';
	ck_assert_str_eq(buf, "vdi: 25 percent processed\nvdi: 50 percent processed\n");
}
END_TEST

START_TEST(test_parse_numbers)
{
	uint64_t v;
	uint32_t ms;
	int saved = dup(2), null = open("/dev/null", 1);

	dup2(null, 2); /* the refusals print their message */
	ck_assert_int_eq(cli_parse_uint("-n", "64", 1, 64, &v), 0);
	ck_assert_uint_eq(v, 64);
	ck_assert_int_eq(cli_parse_uint("-n", "65", 1, 64, &v), -1);
	ck_assert_int_eq(cli_parse_uint("-n", "0", 1, 64, &v), -1);
	ck_assert_int_eq(cli_parse_uint("-n", "-1", 0, 64, &v), -1);
	ck_assert_int_eq(cli_parse_uint("-n", "4x", 0, 64, &v), -1);
	ck_assert_int_eq(cli_parse_uint("-n", "", 0, 64, &v), -1);
	ck_assert_int_eq(cli_parse_ms("-t", "infinite", &ms), 0);
	ck_assert_uint_eq(ms, VDI_INFINITE);
	ck_assert_int_eq(cli_parse_ms("-t", "2500", &ms), 0);
	ck_assert_uint_eq(ms, 2500);
	ck_assert_int_eq(cli_parse_ms("-t", "2147483648", &ms), -1);
	ck_assert_int_eq(cli_parse_ms("-t", "1s", &ms), -1);
	dup2(saved, 2);
	close(null);
	close(saved);
}
END_TEST

START_TEST(test_dispatch_usage)
{
	char *none[] = { "vdi", NULL };
	char *bad[] = { "vdi", "frob", NULL };
	char *ls_bad[] = { "vdi", "ls", "extra", NULL };
	char *abort_bad[] = { "vdi", "abort", "a/b", NULL };
	char *exec_bad[] = { "vdi", "exec", "SELECT", NULL };
	int saved = dup(2), null = open("/dev/null", 1);

	dup2(null, 2);
	ck_assert_int_eq(cli_main(1, none), CLI_EXIT_USAGE);
	ck_assert_int_eq(cli_main(2, bad), CLI_EXIT_USAGE);
	ck_assert_int_eq(cli_main(3, ls_bad), CLI_EXIT_USAGE);
	ck_assert_int_eq(cli_main(3, abort_bad), CLI_EXIT_USAGE);
	ck_assert_int_eq(cli_main(3, exec_bad), CLI_EXIT_USAGE);
	dup2(saved, 2);
	close(null);
	close(saved);
}
END_TEST

static Suite *misc_suite(void)
{
	Suite *s = suite_create("cli_misc");
	TCase *tc = tcase_create("misc");

	tcase_set_timeout(tc, 10);
	tcase_add_test(tc, test_bytes);
	tcase_add_test(tc, test_line);
	tcase_add_test(tc, test_summary);
	tcase_add_test(tc, test_mode);
	tcase_add_test(tc, test_stats_lines);
	tcase_add_test(tc, test_parse_numbers);
	tcase_add_test(tc, test_dispatch_usage);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(misc_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
