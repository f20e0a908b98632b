/* SPDX-License-Identifier: MIT */
/* main.c - entry point of `vdi`; the dispatch is dispatch.c. */
#include "cli.h"

int main(int argc, char **argv)
{
	return cli_main(argc, argv);
}
