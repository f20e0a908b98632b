/* SPDX-License-Identifier: MIT */
/*
 * vdierror.h (sqlvdi) - the VD_E_* return codes of Microsoft's Linux VDI
 * client API.  They are libvdi's (../vdi.h), with the same values:
 * MAKE_HRESULT(1, 0x77, n) read as int.  See vdi.h in this folder.
 */
#ifndef SQLVDI_VDIERROR_H
#define SQLVDI_VDIERROR_H

#include "../vdi.h"

#endif /* SQLVDI_VDIERROR_H */
