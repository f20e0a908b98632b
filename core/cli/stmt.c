/* SPDX-License-Identifier: MIT */
/*
 * stmt.c - lexer and parser for the statements of `vdi exec` (stmt.h).
 *
 * Two stages: a lexer that turns the text into tokens (keywords and
 * regular identifiers, delimited identifiers, strings, numbers,
 * punctuation) with their line and column, and a recursive-descent
 * parser that fills struct stmt.  Option values are checked against a
 * table, so every option has exactly one rule and one message.
 */
#include "stmt.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

enum tok_type {
	T_END,
	T_WORD,   /* keyword or regular identifier */
	T_QIDENT, /* [bracketed] or "quoted" identifier */
	T_STRING, /* 'string' or N'string' */
	T_NUMBER, /* starts with a digit; may carry a bad suffix */
	T_PUNCT,  /* = , ; ( ) */
	T_BAD,    /* a character that starts no token */
};

#define TOK_MAX 512

struct token {
	enum tok_type type;
	char text[TOK_MAX + 1]; /* unescaped value */
	int too_long;
	unsigned line, col;
};

struct parser {
	const char *p; /* next unread character */
	unsigned line, col;
	struct token tok; /* current token */
	char *err;
	size_t errlen;
	int failed;
};

static void perr(struct parser *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void perr(struct parser *ps, const char *fmt, ...)
{
	va_list ap;

	if (ps->failed)
		return;
	ps->failed = 1;
	va_start(ap, fmt);
	vsnprintf(ps->err, ps->errlen, fmt, ap);
	va_end(ap);
}

/* ------------------------------------------------------------------ lexer */

static void advance(struct parser *ps)
{
	if (*ps->p == '\n') {
		ps->line++;
		ps->col = 1;
	} else {
		ps->col++;
	}
	ps->p++;
}

static int skip_comment(struct parser *ps)
{
	if (ps->p[0] == '-' && ps->p[1] == '-') {
		while (*ps->p && *ps->p != '\n')
			advance(ps);
		return 1;
	}
	if (ps->p[0] == '/' && ps->p[1] == '*') {
		unsigned line = ps->line, col = ps->col;

		advance(ps);
		advance(ps);
		while (*ps->p && !(ps->p[0] == '*' && ps->p[1] == '/'))
			advance(ps);
		if (!*ps->p) {
			perr(ps,
			     "cannot parse statement: comment opened at line %u, column %u is not closed",
			     line, col);
			return 0;
		}
		advance(ps);
		advance(ps);
		return 1;
	}
	return 0;
}

static void skip_blanks(struct parser *ps)
{
	for (;;) {
		while (*ps->p && isspace((unsigned char)*ps->p))
			advance(ps);
		if (!skip_comment(ps))
			return;
	}
}

static void tok_put(struct token *t, size_t *n, char c)
{
	if (*n < TOK_MAX)
		t->text[(*n)++] = c;
	else
		t->too_long = 1;
}

/* Reads a delimited run up to `close`, where a doubled close char stands
 * for itself ('it''s', [a]]b], "a""b"). */
static void lex_delimited(struct parser *ps, char close, const char *what)
{
	struct token *t = &ps->tok;
	size_t n = 0;

	advance(ps); /* opening quote or bracket */
	for (;;) {
		if (!*ps->p) {
			perr(ps,
			     "cannot parse statement: %s opened at line %u, column %u is not closed",
			     what, t->line, t->col);
			break;
		}
		if (*ps->p == close) {
			advance(ps);
			if (*ps->p != close)
				break;
		}
		tok_put(t, &n, *ps->p);
		advance(ps);
	}
	t->text[n] = '\0';
}

static int is_ident_start(int c)
{
	return isalpha(c) || c == '_' || c == '@' || c == '#';
}

static int is_ident_char(int c)
{
	return isalnum(c) || c == '_' || c == '@' || c == '#' || c == '$';
}

static void lex_run(struct parser *ps, enum tok_type type)
{
	struct token *t = &ps->tok;
	size_t n = 0;

	t->type = type;
	while (*ps->p && is_ident_char((unsigned char)*ps->p)) {
		tok_put(t, &n, *ps->p);
		advance(ps);
	}
	t->text[n] = '\0';
}

static void next(struct parser *ps)
{
	struct token *t = &ps->tok;
	unsigned char c;

	skip_blanks(ps);
	t->line = ps->line;
	t->col = ps->col;
	t->too_long = 0;
	t->text[0] = '\0';
	c = (unsigned char)*ps->p;
	if (!c) {
		t->type = T_END;
	} else if ((c == 'N' || c == 'n') && ps->p[1] == '\'') {
		advance(ps);
		t->type = T_STRING;
		lex_delimited(ps, '\'', "string");
	} else if (c == '\'') {
		t->type = T_STRING;
		lex_delimited(ps, '\'', "string");
	} else if (c == '[') {
		t->type = T_QIDENT;
		lex_delimited(ps, ']', "bracketed identifier");
	} else if (c == '"') {
		t->type = T_QIDENT;
		lex_delimited(ps, '"', "quoted identifier");
	} else if (isdigit(c)) {
		lex_run(ps, T_NUMBER);
	} else if (is_ident_start(c)) {
		lex_run(ps, T_WORD);
	} else if (strchr("=,;()", c)) {
		t->type = T_PUNCT;
		t->text[0] = (char)c;
		t->text[1] = '\0';
		advance(ps);
	} else {
		t->type = T_BAD;
		t->text[0] = (char)c;
		t->text[1] = '\0';
		advance(ps);
	}
}

/* ------------------------------------------------------------- helpers */

static const char *tok_desc(const struct token *t, char *buf, size_t len)
{
	if (t->type == T_END)
		return "end of statement";
	if (t->type == T_BAD && !isprint((unsigned char)t->text[0]))
		snprintf(buf, len, "character 0x%02x", (unsigned char)t->text[0]);
	else
		snprintf(buf, len, "'%.60s'", t->text);
	return buf;
}

static void expected(struct parser *ps, const char *what)
{
	char buf[96];

	perr(ps, "cannot parse statement: expected %s, got %s at line %u, column %u", what,
	     tok_desc(&ps->tok, buf, sizeof(buf)), ps->tok.line, ps->tok.col);
}

static int is_word(const struct parser *ps, const char *kw)
{
	return ps->tok.type == T_WORD && strcasecmp(ps->tok.text, kw) == 0;
}

static int is_punct(const struct parser *ps, char c)
{
	return ps->tok.type == T_PUNCT && ps->tok.text[0] == c;
}

static int accept_word(struct parser *ps, const char *kw)
{
	if (!is_word(ps, kw))
		return 0;
	next(ps);
	return 1;
}

static int expect_word(struct parser *ps, const char *kw, const char *ctx)
{
	char what[96];

	if (accept_word(ps, kw))
		return 1;
	snprintf(what, sizeof(what), "%s%s", kw, ctx);
	expected(ps, what);
	return 0;
}

static int expect_punct(struct parser *ps, char c, const char *ctx)
{
	char what[96];

	if (is_punct(ps, c)) {
		next(ps);
		return 1;
	}
	snprintf(what, sizeof(what), "'%c'%s", c, ctx);
	expected(ps, what);
	return 0;
}

const char *stmt_name_problem(const char *name)
{
	size_t len = strlen(name);

	if (len == 0)
		return "must not be empty";
	if (len > STMT_MAX_NAME)
		return "is longer than 127 bytes";
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return "must not be '.' or '..'";
	for (const char *c = name; *c; c++) {
		if (*c == '/' || *c == '\\')
			return "must not contain '/' or '\\'";
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			return "must not contain control characters";
	}
	return NULL;
}

static void copy_name(struct parser *ps, char *dst, const char *what)
{
	const char *why =
		ps->tok.too_long ? "is longer than 127 bytes" : stmt_name_problem(ps->tok.text);

	if (why) {
		perr(ps, "invalid %s '%.60s%s': %s", what, ps->tok.text,
		     strlen(ps->tok.text) > 60 ? "..." : "", why);
		return;
	}
	strcpy(dst, ps->tok.text);
	next(ps);
}

/* ------------------------------------------------------------- options */

enum check { CHK_RANGE, CHK_POW2, CHK_MUL64K };
enum vtype { V_FLAG, V_NUM, V_OPTNUM, V_STR, V_MOVE };

/* The statements an option is valid with: one bit per statement. */
#define K_BDB      (1u << 0) /* BACKUP DATABASE */
#define K_BLOG     (1u << 1) /* BACKUP LOG */
#define K_RDB      (1u << 2) /* RESTORE DATABASE */
#define K_RLOG     (1u << 3) /* RESTORE LOG */
#define K_VERIFY   (1u << 4)
#define K_HEADER   (1u << 5)
#define K_FILELIST (1u << 6)
#define K_BACKUP   (K_BDB | K_BLOG)
#define K_RESTORE  (K_RDB | K_RLOG)
#define K_READS    (K_RESTORE | K_VERIFY | K_HEADER | K_FILELIST)
#define K_ALL      (K_BACKUP | K_READS)

static unsigned kind_bit(const struct stmt *st)
{
	switch (st->kind) {
	case STMT_BACKUP: return st->log ? K_BLOG : K_BDB;
	case STMT_RESTORE: return st->log ? K_RLOG : K_RDB;
	case STMT_VERIFYONLY: return K_VERIFY;
	case STMT_HEADERONLY: return K_HEADER;
	case STMT_FILELISTONLY: return K_FILELIST;
	}
	return 0;
}

struct optdef {
	const char *name;
	uint64_t bit;
	unsigned kinds;
	enum vtype vt;
	enum check chk;
	uint64_t min, max;      /* numbers: the range; strings: max length */
	const char *rule;       /* "must be ..." */
	size_t field;           /* offsetof the value in struct stmt */
	int wide;               /* field is uint64_t */
	uint64_t refuses;       /* options it cannot be used with */
	const char *unmodelled; /* accepted, not modelled: why */
};

#define F(f) offsetof(struct stmt, f)
#define NAMED_STR(opt, bit, kinds, len, field)                                        \
	{                                                                             \
		opt, bit, kinds, V_STR, CHK_RANGE, 0, len,                            \
			"must be a string of at most " #len " bytes", F(field), 0, 0, \
			"not stored in the backup"                                    \
	}
#define TAPE_FLAG(opt, bit, other)                                                \
	{                                                                         \
		opt, bit, K_ALL, V_FLAG, CHK_RANGE, 0, 0, "", 0, 0, other,        \
			"a tape option: a virtual device has no tape to position" \
	}
#define MEDIA_FLAG(opt, bit, other)                                                                             \
	{                                                                                                       \
		opt, bit, K_BACKUP, V_FLAG, CHK_RANGE, 0, 0, "", 0, 0, other,                                   \
			"a virtual device carries one new media stream per backup: no media header or earlier " \
			"backup sets to check or keep"                                                          \
	}

static const struct optdef optdefs[] = {
	{ "BLOCKSIZE", OPT_BLOCKSIZE, K_ALL, V_NUM, CHK_POW2, 512, 65536,
	  "must be a power of two from 512 to 65536", F(blocksize), 0, 0, NULL },
	{ "MAXTRANSFERSIZE", OPT_MAXTRANSFERSIZE, K_ALL, V_NUM, CHK_MUL64K, 65536, 4194304,
	  "must be a multiple of 65536 from 65536 to 4194304", F(maxtransfersize), 0, 0, NULL },
	{ "BUFFERCOUNT", OPT_BUFFERCOUNT, K_ALL, V_NUM, CHK_RANGE, 1, STMT_MAX_BUFFERCOUNT,
	  "must be from 1 to 1024", F(buffercount), 0, 0, NULL },
	{ "STATS", OPT_STATS, K_ALL, V_OPTNUM, CHK_RANGE, 1, 100, "must be from 1 to 100", F(stats),
	  0, 0, NULL },
	{ "DESCRIPTION", OPT_DESCRIPTION, K_BACKUP, V_STR, CHK_RANGE, 0, STMT_MAX_DESCRIPTION,
	  "must be a string of at most 255 bytes", F(description), 0, 0, NULL },
	{ "DIFFERENTIAL", OPT_DIFFERENTIAL, K_BDB, V_FLAG, CHK_RANGE, 0, 0, "", 0, 0, 0, NULL },
	{ "COPY_ONLY", OPT_COPY_ONLY, K_BACKUP, V_FLAG, CHK_RANGE, 0, 0, "", 0, 0, 0, NULL },
	{ "SNAPSHOT", OPT_SNAPSHOT, K_BDB | K_RDB, V_FLAG, CHK_RANGE, 0, 0, "", 0, 0,
	  OPT_DIFFERENTIAL | OPT_COMPRESSION, NULL },
	{ "METADATA_ONLY", OPT_SNAPSHOT, K_BDB | K_RDB, V_FLAG, CHK_RANGE, 0, 0, "", 0, 0,
	  OPT_DIFFERENTIAL | OPT_COMPRESSION, NULL },
	MEDIA_FLAG("FORMAT", OPT_FORMAT, OPT_NOFORMAT),
	MEDIA_FLAG("NOFORMAT", OPT_NOFORMAT, 0),
	MEDIA_FLAG("INIT", OPT_INIT, OPT_NOINIT),
	MEDIA_FLAG("NOINIT", OPT_NOINIT, 0),
	MEDIA_FLAG("SKIP", OPT_SKIP, OPT_NOSKIP),
	MEDIA_FLAG("NOSKIP", OPT_NOSKIP, 0),
	TAPE_FLAG("REWIND", OPT_REWIND, OPT_NOREWIND),
	TAPE_FLAG("NOREWIND", OPT_NOREWIND, 0),
	TAPE_FLAG("UNLOAD", OPT_UNLOAD, OPT_NOUNLOAD),
	TAPE_FLAG("NOUNLOAD", OPT_NOUNLOAD, 0),
	{ "CHECKSUM", OPT_CHECKSUM, K_ALL, V_FLAG, CHK_RANGE, 0, 0, "", 0, 0, OPT_NO_CHECKSUM,
	  NULL },
	{ "NO_CHECKSUM", OPT_NO_CHECKSUM, K_ALL, V_FLAG, CHK_RANGE, 0, 0, "", 0, 0, 0,
	  "every chunk carries its CRC32C regardless" },
	{ "COMPRESSION", OPT_COMPRESSION, K_BACKUP, V_FLAG, CHK_RANGE, 0, 0, "", 0, 0,
	  OPT_NO_COMPRESSION, "pages are stored as they are" },
	{ "NO_COMPRESSION", OPT_NO_COMPRESSION, K_BACKUP, V_FLAG, CHK_RANGE, 0, 0, "", 0, 0, 0,
	  NULL },
	{ "CONTINUE_AFTER_ERROR", OPT_CONTINUE_AFTER_ERROR, K_ALL, V_FLAG, CHK_RANGE, 0, 0, "", 0,
	  0, OPT_STOP_ON_ERROR, "the stand-in stops at the first damaged byte" },
	{ "STOP_ON_ERROR", OPT_STOP_ON_ERROR, K_ALL, V_FLAG, CHK_RANGE, 0, 0, "", 0, 0, 0, NULL },
	NAMED_STR("NAME", OPT_NAME, K_BACKUP, 127, name),
	NAMED_STR("MEDIANAME", OPT_MEDIANAME, K_ALL, 127, medianame),
	NAMED_STR("MEDIADESCRIPTION", OPT_MEDIADESCRIPTION, K_BACKUP, 255, mediadescription),
	{ "NO_TRUNCATE", OPT_NO_TRUNCATE, K_BLOG, V_FLAG, CHK_RANGE, 0, 0, "", 0, 0, 0,
	  "the stand-in's log backups never truncate anything" },
	{ "FILE", OPT_FILE, K_READS, V_NUM, CHK_RANGE, 1, INT32_MAX, "must be from 1 to 2147483647",
	  F(file), 0, 0, NULL },
	{ "REPLACE", OPT_REPLACE, K_RDB, V_FLAG, CHK_RANGE, 0, 0, "", 0, 0, 0, NULL },
	{ "RECOVERY", OPT_RECOVERY, K_RESTORE, V_FLAG, CHK_RANGE, 0, 0, "", 0, 0,
	  OPT_NORECOVERY | OPT_STANDBY, NULL },
	{ "NORECOVERY", OPT_NORECOVERY, K_RESTORE, V_FLAG, CHK_RANGE, 0, 0, "", 0, 0, OPT_STANDBY,
	  NULL },
	{ "STANDBY", OPT_STANDBY, K_RESTORE, V_STR, CHK_RANGE, 1, STMT_MAX_PATH,
	  "must be a file name of 1 to 1024 bytes", F(standby), 0, 0,
	  "restored as with NORECOVERY: no undo file is written" },
	{ "MOVE", OPT_MOVE, K_RDB, V_MOVE, CHK_RANGE, 1, STMT_MAX_PATH,
	  "must be 'logical name' TO 'path of 1 to 1024 bytes'", 0, 0, 0, NULL },
	{ "STOPAT", OPT_STOPAT, K_RLOG, V_STR, CHK_RANGE, 1, STMT_MAX_NAME,
	  "must be a point in time like '2026-12-07 11:00:00'", F(stopat), 0, 0,
	  "the stand-in's log backups hold no records to stop in: each is applied whole" },
	{ "FAULT_ABORT_AFTER", OPT_FAULT_ABORT_AFTER, K_ALL, V_NUM, CHK_RANGE, 0, INT64_MAX,
	  "must be from 0 to 9223372036854775807", F(fault_abort_after), 1, 0, NULL },
	{ "FAULT_STALL", OPT_FAULT_STALL, K_ALL, V_NUM, CHK_RANGE, 0, STMT_MAX_MS,
	  "must be from 0 to 600000 (milliseconds)", F(fault_stall_ms), 0, 0, NULL },
	{ "FAULT_EXTRA_FLUSHES", OPT_FAULT_EXTRA_FLUSHES, K_BACKUP, V_NUM, CHK_RANGE, 0, 1000,
	  "must be from 0 to 1000", F(fault_extra_flushes), 0, 0, NULL },
	{ "FAULT_LATE_COMPLETE", OPT_FAULT_LATE_COMPLETE, K_BACKUP, V_NUM, CHK_RANGE, 0,
	  STMT_MAX_MS, "must be from 0 to 600000 (milliseconds)", F(fault_late_complete_ms), 0, 0,
	  NULL },
	{ "FAULT_FAIL_AT", OPT_FAULT_FAIL_AT, K_ALL, V_STR, CHK_RANGE, 1, STMT_MAX_NAME,
	  "must name a command: 'VDC_Rewind', 'VDC_WriteMark', 'VDC_SkipMarks', 'VDC_Load', "
	  "'VDC_GetPosition', 'VDC_SetPosition', 'VDC_ClearError', 'VDC_Discard', 'VDC_Flush', "
	  "'VDC_Complete'",
	  F(fault_at_name), 0, 0, NULL },
	{ "FAULT_STALL_AT", OPT_FAULT_STALL_AT, K_ALL, V_STR, CHK_RANGE, 1, STMT_MAX_NAME,
	  "must name a command: 'VDC_Rewind', 'VDC_WriteMark', 'VDC_SkipMarks', 'VDC_Load', "
	  "'VDC_GetPosition', 'VDC_SetPosition', 'VDC_ClearError', 'VDC_Discard', 'VDC_Flush', "
	  "'VDC_Complete'",
	  F(fault_stall_name), 0, 0, NULL },
};

#define NOPTS (sizeof(optdefs) / sizeof(optdefs[0]))

static const struct optdef *find_opt(const char *name)
{
	for (size_t i = 0; i < NOPTS; i++)
		if (strcasecmp(optdefs[i].name, name) == 0)
			return &optdefs[i];
	return NULL;
}

/* The first option of the table with bit b (its name for messages). */
static const struct optdef *opt_of_bit(uint64_t b)
{
	for (size_t i = 0; i < NOPTS; i++)
		if (optdefs[i].bit == b)
			return &optdefs[i];
	return NULL;
}

static int is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

/* Plain decimal digits only; returns 0 and sets *v, or -1. */
static int parse_u64(const char *s, uint64_t *v)
{
	uint64_t x = 0;

	if (!*s)
		return -1;
	for (; *s; s++) {
		if (!isdigit((unsigned char)*s))
			return -1;
		if (x > (UINT64_MAX - 9) / 10)
			return -1;
		x = x * 10 + (uint64_t)(*s - '0');
	}
	*v = x;
	return 0;
}

static int value_ok(const struct optdef *o, uint64_t v)
{
	if (v < o->min || v > o->max)
		return 0;
	if (o->chk == CHK_POW2)
		return is_pow2(v);
	if (o->chk == CHK_MUL64K)
		return v % 65536 == 0;
	return 1;
}

static void store(struct stmt *st, const struct optdef *o, uint64_t v)
{
	char *base = (char *)st;

	if (o->wide)
		memcpy(base + o->field, &v, sizeof(v));
	else {
		uint32_t v32 = (uint32_t)v;

		memcpy(base + o->field, &v32, sizeof(v32));
	}
}

static void parse_number_value(struct parser *ps, struct stmt *st, const struct optdef *o)
{
	uint64_t v;
	char shown[80];

	snprintf(shown, sizeof(shown), "%.60s", ps->tok.text);
	if (ps->tok.type == T_END || (ps->tok.type == T_PUNCT && !is_punct(ps, '('))) {
		perr(ps, "invalid %s: missing value after '=' at line %u, column %u", o->name,
		     ps->tok.line, ps->tok.col);
		return;
	}
	if (ps->tok.type != T_NUMBER || parse_u64(ps->tok.text, &v) != 0) {
		perr(ps,
		     "invalid %s '%s': must be a plain decimal number of %s (no sign, no K/KB/MB suffix); %s",
		     o->name, shown, o->chk == CHK_RANGE ? "units" : "bytes", o->rule);
		return;
	}
	if (!value_ok(o, v)) {
		perr(ps, "invalid %s '%s': %s", o->name, shown, o->rule);
		return;
	}
	store(st, o, v);
	next(ps);
}

/* A string token of min..max bytes without control characters into dst
 * (max + 1 bytes); what names it in messages. */
static void take_string(struct parser *ps, char *dst, const char *what, uint64_t min, uint64_t max,
                        const char *rule)
{
	size_t len = strlen(ps->tok.text);

	if (ps->tok.type != T_STRING) {
		char buf[96];

		perr(ps, "invalid %s %s at line %u, column %u: %s", what,
		     tok_desc(&ps->tok, buf, sizeof(buf)), ps->tok.line, ps->tok.col, rule);
		return;
	}
	if (ps->tok.too_long || len > max || len < min) {
		perr(ps, "invalid %s '%.40s%s': %s", what, ps->tok.text, len > 40 ? "..." : "",
		     rule);
		return;
	}
	for (const char *c = ps->tok.text; *c; c++) {
		if ((unsigned char)*c < 0x20 || *c == 0x7f) {
			perr(ps, "invalid %s '%.40s': must not contain control characters", what,
			     ps->tok.text);
			return;
		}
	}
	memcpy(dst, ps->tok.text, len + 1);
	next(ps);
}

/* MOVE 'logical' TO 'path' (the option name already taken). */
static void parse_move(struct parser *ps, struct stmt *st, const struct optdef *o)
{
	struct stmt_move *m;

	if (st->nmove == STMT_MAX_MOVES) {
		perr(ps, "too many MOVE clauses: at most %d", STMT_MAX_MOVES);
		return;
	}
	m = &st->move[st->nmove];
	take_string(ps, m->from, "MOVE logical file name", 1, STMT_MAX_NAME,
	            "must be a quoted logical file name of 1 to 127 bytes");
	if (ps->failed || !expect_word(ps, "TO", " after MOVE 'logical name'"))
		return;
	take_string(ps, m->to, "MOVE target", 1, STMT_MAX_PATH, o->rule);
	if (ps->failed)
		return;
	for (unsigned i = 0; i < st->nmove; i++) {
		if (strcasecmp(st->move[i].from, m->from) == 0) {
			perr(ps,
			     "invalid MOVE '%.60s': logical file moved twice (clauses %u and %u)",
			     m->from, i + 1, st->nmove + 1);
			return;
		}
	}
	st->nmove++;
}

static const char *known_options(char *buf, size_t len)
{
	size_t n = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < NOPTS && n < len; i++)
		n += (size_t)snprintf(buf + n, len - n, "%s%s", i ? ", " : "", optdefs[i].name);
	return buf;
}

static void parse_option(struct parser *ps, struct stmt *st)
{
	const struct optdef *o;
	char known[1024];

	if (ps->tok.type != T_WORD) {
		expected(ps, "an option name after WITH or ','");
		return;
	}
	o = find_opt(ps->tok.text);
	if (!o) {
		perr(ps, "unknown option '%.60s' at line %u, column %u: known options are %s",
		     ps->tok.text, ps->tok.line, ps->tok.col, known_options(known, sizeof(known)));
		return;
	}
	if (!(o->kinds & kind_bit(st))) {
		perr(ps, "option %s is not valid with %s", o->name, stmt_name(st));
		return;
	}
	if ((st->given & o->bit) && o->vt != V_MOVE) {
		perr(ps, "option %s given twice", o->name);
		return;
	}
	st->given |= o->bit;
	next(ps);
	if (o->vt == V_FLAG)
		return;
	if (o->vt == V_MOVE) {
		parse_move(ps, st, o);
		return;
	}
	if (o->vt == V_OPTNUM && !is_punct(ps, '='))
		return;
	if (!expect_punct(ps, '=', " after the option name"))
		return;
	if (o->vt == V_STR)
		take_string(ps, (char *)st + o->field, o->name, o->min, o->max, o->rule);
	else
		parse_number_value(ps, st, o);
}

static void parse_options(struct parser *ps, struct stmt *st)
{
	do {
		parse_option(ps, st);
		if (ps->failed)
			return;
	} while (is_punct(ps, ',') && (next(ps), 1));
}

const char *stmt_unmodelled(const struct stmt *st, char *buf, size_t len)
{
	size_t n = 0;
	uint64_t seen = 0;

	if (len)
		buf[0] = '\0';
	for (size_t i = 0; i < NOPTS; i++) {
		const struct optdef *o = &optdefs[i];
		const char *why = o->unmodelled;

		if (o->bit == OPT_COPY_ONLY && (st->given & OPT_DIFFERENTIAL))
			why = "ignored with DIFFERENTIAL, as SQL Server ignores it";
		if (!why || !(st->given & o->bit) || (seen & o->bit) || n >= len)
			continue;
		seen |= o->bit;
		n += (size_t)snprintf(buf + n, len - n, "%s%s (%s)", n ? "; " : "", o->name, why);
	}
	return buf;
}

/* ------------------------------------------------------------ statement */

static void parse_device(struct parser *ps, struct stmt *st)
{
	char buf[96];

	if (ps->tok.type == T_WORD && !is_word(ps, "VIRTUAL_DEVICE") &&
	    (is_word(ps, "DISK") || is_word(ps, "TAPE") || is_word(ps, "URL"))) {
		perr(ps,
		     "unsupported backup device type '%s' at line %u, column %u: only VIRTUAL_DEVICE is supported",
		     ps->tok.text, ps->tok.line, ps->tok.col);
		return;
	}
	if (!expect_word(ps, "VIRTUAL_DEVICE", "") ||
	    !expect_punct(ps, '=', " after VIRTUAL_DEVICE"))
		return;
	if (ps->tok.type != T_STRING) {
		perr(ps,
		     "invalid VIRTUAL_DEVICE %s at line %u, column %u: must be a quoted string like 'name'",
		     tok_desc(&ps->tok, buf, sizeof(buf)), ps->tok.line, ps->tok.col);
		return;
	}
	if (st->ndev == STMT_MAX_DEVICES) {
		perr(ps, "too many VIRTUAL_DEVICE clauses: at most 64 devices");
		return;
	}
	for (unsigned i = 0; i < st->ndev; i++) {
		if (strcmp(st->dev[i], ps->tok.text) == 0) {
			perr(ps,
			     "invalid VIRTUAL_DEVICE '%.60s': device named twice (clauses %u and %u)",
			     ps->tok.text, i + 1, st->ndev + 1);
			return;
		}
	}
	copy_name(ps, st->dev[st->ndev], "VIRTUAL_DEVICE");
	if (!ps->failed)
		st->ndev++;
}

static void parse_devices(struct parser *ps, struct stmt *st)
{
	do {
		parse_device(ps, st);
		if (ps->failed)
			return;
	} while (is_punct(ps, ',') && (next(ps), 1));
}

static void parse_dbname(struct parser *ps, struct stmt *st)
{
	if (ps->tok.type == T_WORD || ps->tok.type == T_QIDENT) {
		if (ps->tok.type == T_WORD && ps->tok.text[0] == '@') {
			perr(ps,
			     "invalid database name '%s' at line %u, column %u: variables are not supported",
			     ps->tok.text, ps->tok.line, ps->tok.col);
			return;
		}
		copy_name(ps, st->db, "database name");
		return;
	}
	expected(ps, "a database name");
}

static void parse_head(struct parser *ps, struct stmt *st)
{
	if (accept_word(ps, "BACKUP")) {
		st->kind = STMT_BACKUP;
		if (accept_word(ps, "LOG")) {
			st->log = 1;
		} else if (!accept_word(ps, "DATABASE")) {
			expected(ps, "DATABASE or LOG after BACKUP");
			return;
		}
		parse_dbname(ps, st);
		if (!ps->failed)
			expect_word(ps, "TO", " after the database name");
		return;
	}
	if (!accept_word(ps, "RESTORE")) {
		expected(ps, "BACKUP or RESTORE");
		return;
	}
	if (accept_word(ps, "LOG")) {
		st->log = 1;
		st->kind = STMT_RESTORE;
		parse_dbname(ps, st);
	} else if (accept_word(ps, "DATABASE")) {
		st->kind = STMT_RESTORE;
		parse_dbname(ps, st);
	} else if (accept_word(ps, "VERIFYONLY")) {
		st->kind = STMT_VERIFYONLY;
	} else if (accept_word(ps, "HEADERONLY")) {
		st->kind = STMT_HEADERONLY;
	} else if (accept_word(ps, "FILELISTONLY")) {
		st->kind = STMT_FILELISTONLY;
	} else {
		expected(ps, "DATABASE, LOG, VERIFYONLY, HEADERONLY or FILELISTONLY after RESTORE");
		return;
	}
	if (!ps->failed)
		expect_word(ps, "FROM", " after RESTORE ...");
}

static void parse_tail(struct parser *ps)
{
	if (is_punct(ps, ';'))
		next(ps);
	if (ps->tok.type != T_END)
		expected(ps, "WITH, ',' or end of statement");
}

static void set_defaults(struct stmt *st)
{
	if (!(st->given & OPT_BLOCKSIZE))
		st->blocksize = 512;
	if (!(st->given & OPT_MAXTRANSFERSIZE))
		st->maxtransfersize = 65536;
	if (!(st->given & OPT_BUFFERCOUNT))
		st->buffercount = 2 * st->ndev + 2;
	if (st->stats == 0) /* not given, or STATS without a value */
		st->stats = 10;
	if (!(st->given & OPT_FILE))
		st->file = 1;
	st->replace = (st->given & OPT_REPLACE) != 0;
}

uint32_t stmt_fault_command(const char *name)
{
	/* the codes of vdi.h's enum VDCommands (stmt.c stands alone: fuzz_stmt) */
	static const struct {
		const char *name;
		uint32_t code;
	} cmds[] = {
		{ "VDC_ClearError", 3 },   { "VDC_Rewind", 4 },   { "VDC_WriteMark", 5 },
		{ "VDC_SkipMarks", 6 },    { "VDC_Load", 8 },     { "VDC_GetPosition", 9 },
		{ "VDC_SetPosition", 10 }, { "VDC_Discard", 11 }, { "VDC_Flush", 12 },
		{ "VDC_Complete", 19 },
	};

	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcasecmp(name, cmds[i].name))
			return cmds[i].code;
	return 0;
}

/* FAULT_FAIL_AT, FAULT_STALL_AT: the names become codes. */
static void check_fault_commands(struct parser *ps, struct stmt *st)
{
	const struct {
		uint64_t bit;
		const char *opt, *name;
		uint32_t *code;
	} f[] = {
		{ OPT_FAULT_FAIL_AT, "FAULT_FAIL_AT", st->fault_at_name, &st->fault_fail_at },
		{ OPT_FAULT_STALL_AT, "FAULT_STALL_AT", st->fault_stall_name, &st->fault_stall_at },
	};

	for (size_t i = 0; i < 2 && !ps->failed; i++) {
		if (!(st->given & f[i].bit))
			continue;
		*f[i].code = stmt_fault_command(f[i].name);
		if (!*f[i].code)
			perr(ps, "invalid %s '%s': %s", f[i].opt, f[i].name,
			     opt_of_bit(f[i].bit)->rule);
	}
}

static void check_combination(struct parser *ps, struct stmt *st)
{
	uint64_t bytes = (uint64_t)st->buffercount * st->maxtransfersize;

	for (size_t i = 0; i < NOPTS; i++) {
		const struct optdef *o = &optdefs[i];
		uint64_t both = st->given & o->refuses;

		if ((st->given & o->bit) && both) {
			perr(ps, "options %s and %s cannot be used together", o->name,
			     opt_of_bit(both & (~both + 1))->name);
			return;
		}
	}
	if (bytes > STMT_MAX_BUFFER_BYTES)
		perr(ps,
		     "invalid BUFFERCOUNT '%u' with MAXTRANSFERSIZE '%u': buffers would take %llu bytes, at most %llu allowed",
		     st->buffercount, st->maxtransfersize, (unsigned long long)bytes,
		     (unsigned long long)STMT_MAX_BUFFER_BYTES);
}

int stmt_parse(const char *text, struct stmt *st, char *err, size_t errlen)
{
	struct parser ps = { .p = text, .line = 1, .col = 1, .err = err, .errlen = errlen };

	memset(st, 0, sizeof(*st));
	if (errlen)
		err[0] = '\0';
	next(&ps);
	if (ps.tok.type == T_END && !ps.failed) {
		perr(&ps, "cannot parse statement: the statement is empty");
		return -1;
	}
	parse_head(&ps, st);
	if (!ps.failed)
		parse_devices(&ps, st);
	if (!ps.failed && accept_word(&ps, "WITH"))
		parse_options(&ps, st);
	if (!ps.failed)
		parse_tail(&ps);
	if (ps.failed)
		return -1;
	set_defaults(st);
	check_combination(&ps, st);
	check_fault_commands(&ps, st);
	return ps.failed ? -1 : 0;
}

const char *stmt_kind_name(enum stmt_kind kind)
{
	switch (kind) {
	case STMT_BACKUP: return "BACKUP DATABASE";
	case STMT_RESTORE: return "RESTORE DATABASE";
	case STMT_VERIFYONLY: return "RESTORE VERIFYONLY";
	case STMT_HEADERONLY: return "RESTORE HEADERONLY";
	case STMT_FILELISTONLY: return "RESTORE FILELISTONLY";
	}
	return "?";
}

const char *stmt_name(const struct stmt *st)
{
	if (st->log)
		return st->kind == STMT_BACKUP ? "BACKUP LOG" : "RESTORE LOG";
	return stmt_kind_name(st->kind);
}
