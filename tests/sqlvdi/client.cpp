/* SPDX-License-Identifier: MIT */
/*
 * client.cpp - a backup client in the shape of Microsoft's Linux sample
 * (shared/spec/sqlvdi-linux-abi.md, "How Microsoft's sample drives a
 * backup"), written only against the installed sqlvdi headers and
 * -lsqlvdi, with several devices (one thread each) and an optional abort
 * in the middle.  It starts the statement with `sqlcmd` from PATH, as such
 * clients do; tests/integration/sqlvdi.sh puts vdi-sqlcmd there.
 *
 *   client {B|R} {D|L} DB USER PASSWORD FILE [DEVICES [ABORT_AFTER]]
 *
 * Device k's stream is FILE.k.  ABORT_AFTER: SignalAbort once device 0
 * moved that many bytes.  Exit status: 0 if the transfer ended with
 * VD_E_CLOSE on every device and sqlcmd succeeded (-b: its exit status
 * says so); 1 otherwise; 2 usage.  The restore statement is
 * "WITH REPLACE", the backup's "WITH FORMAT", both with
 * MAXTRANSFERSIZE=1048576, as such clients send them.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "vdi.h"
#include "vdierror.h"

struct dev {
	ClientVirtualDeviceSet *vds;
	ClientVirtualDevice *vd;
	char name[64];
	char path[4096];
	bool backup;
	unsigned long long abort_after;
	unsigned long long bytes;
	int status;
};

static void *transfer(void *arg)
{
	struct dev *d = (struct dev *)arg;
	FILE *fh = fopen(d->path, d->backup ? "wb" : "rb");
	VDC_Command *cmd;
	int status;

	if (!fh) {
		fprintf(stderr, "client: cannot open %s\n", d->path);
		d->vds->SignalAbort();
		d->status = -1;
		return NULL;
	}
	for (;;) {
		status = d->vd->GetCommand(90, &cmd); /* milliseconds, as the sample */
		if (status == VD_E_TIMEOUT)
			continue;
		if (status != NOERROR)
			break;
		int code = ERROR_SUCCESS;
		size_t n = 0;

		switch (cmd->commandCode) {
		case VDC_Read:
			n = fread(cmd->buffer, 1, (size_t)cmd->size, fh);
			code = n == (size_t)cmd->size ? ERROR_SUCCESS : ERROR_HANDLE_EOF;
			break;
		case VDC_Write:
			n = fwrite(cmd->buffer, 1, (size_t)cmd->size, fh);
			code = n == (size_t)cmd->size ? ERROR_SUCCESS : ERROR_DISK_FULL;
			break;
		case VDC_Flush:
			fflush(fh);
			break;
		case VDC_ClearError:
			break;
		default:
			code = ERROR_NOT_SUPPORTED;
		}
		d->bytes += n;
		status = d->vd->CompleteCommand(cmd, code, n, 0);
		if (status != NOERROR)
			break;
		if (d->abort_after && d->bytes >= d->abort_after) {
			d->vds->SignalAbort();
			d->abort_after = 0;
		}
	}
	fclose(fh);
	d->status = status;
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 7 || argc > 9 || !strchr("BbRr", argv[1][0]) || !strchr("DdLl", argv[2][0])) {
		fprintf(stderr, "usage: client {B|R} {D|L} DB USER PASSWORD FILE [DEVICES [ABORT_AFTER]]\n");
		return 2;
	}
	bool backup = toupper(argv[1][0]) == 'B', data = toupper(argv[2][0]) == 'D';
	unsigned ndev = argc > 7 ? (unsigned)atoi(argv[7]) : 1;
	unsigned long long abort_after = argc > 8 ? strtoull(argv[8], NULL, 10) : 0;
	char name[64], sql[8192], clauses[4096] = "", line[1024];
	struct dev devs[64];
	pthread_t th[64];
	VDConfig config;
	uuid_t id;
	int status, rc = 0;

	if (ndev < 1 || ndev > 64)
		return 2;
	umask(0); /* as Microsoft's sample: SQL Server must open the objects */
	ClientVirtualDeviceSet *vds = new ClientVirtualDeviceSet();
	memset(&config, 0, sizeof(config));
	config.deviceCount = ndev;
	uuid_generate(id);
	uuid_unparse(id, name);
	status = vds->Create(name, &config);
	if (status != NOERROR) {
		printf("VDS::Create fails: x%X\n", status);
		return 1;
	}
	for (unsigned k = 0; k < ndev; k++) {
		size_t l = strlen(clauses);

		snprintf(devs[k].name, sizeof(devs[k].name), k ? "%s%u" : "%s", name, k);
		snprintf(clauses + l, sizeof(clauses) - l, "%sVIRTUAL_DEVICE='%s'", k ? ", " : "", devs[k].name);
	}
	snprintf(sql, sizeof(sql), "sqlcmd -b -U %s -P %s -S . -Q \"%s %s %s %s %s WITH %s, MAXTRANSFERSIZE=1048576\"",
		 argv[4], argv[5], backup ? "BACKUP" : "RESTORE", data ? "DATABASE" : "LOG", argv[3],
		 backup ? "TO" : "FROM", clauses, backup ? "FORMAT" : "REPLACE");
	FILE *pipe = popen(sql, "r");
	if (!pipe) {
		vds->Close();
		return 1;
	}
	status = vds->GetConfiguration(10000, &config);
	if (status != NOERROR) {
		printf("VDS::Getconfig fails: x%X\n", status);
		rc = 1;
		goto shutdown;
	}
	if (!!(config.features & VDF_WriteMedia) != backup) {
		printf("the server's direction is not this client's\n");
		vds->SignalAbort();
		rc = 1;
		goto shutdown;
	}
	for (unsigned k = 0; k < ndev; k++) {
		devs[k].vds = vds;
		devs[k].backup = backup;
		devs[k].abort_after = k == 0 ? abort_after : 0;
		devs[k].bytes = 0;
		snprintf(devs[k].path, sizeof(devs[k].path), "%s.%u", argv[6], k);
		status = vds->OpenDevice(devs[k].name, &devs[k].vd);
		if (status != NOERROR) {
			printf("VDS::OpenDevice fails: x%X\n", status);
			vds->SignalAbort();
			rc = 1;
			goto shutdown;
		}
	}
	for (unsigned k = 0; k < ndev; k++)
		pthread_create(&th[k], NULL, transfer, &devs[k]);
	for (unsigned k = 0; k < ndev; k++) {
		pthread_join(th[k], NULL);
		if (devs[k].status != VD_E_CLOSE) {
			printf("device %s: unexpected termination: x%X\n", devs[k].name, devs[k].status);
			rc = 1;
		}
	}
shutdown:
	vds->Close();
	while (fgets(line, sizeof(line), pipe))
		printf("sqlcmd: %s", line);
	status = pclose(pipe);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		printf("sqlcmd failed (status %d)\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		rc = 1;
	}
	delete vds;
	return rc;
}
