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
enum vtype { V_NONE, V_NUM, V_OPTNUM, V_STR };

#define K_BACKUP  (1u << STMT_BACKUP)
#define K_RESTORE (1u << STMT_RESTORE)
#define K_READS   ((1u << STMT_RESTORE) | (1u << STMT_VERIFYONLY) | (1u << STMT_HEADERONLY))
#define K_ALL     (K_BACKUP | K_READS)

struct optdef {
	const char *name;
	unsigned bit;
	unsigned kinds;
	enum vtype vt;
	enum check chk;
	uint64_t min, max;
	const char *rule; /* "must be ..." */
	size_t field;     /* offsetof the value in struct stmt */
	int wide;         /* field is uint64_t */
};

#define F(f) offsetof(struct stmt, f)

static const struct optdef optdefs[] = {
	{ "BLOCKSIZE", OPT_BLOCKSIZE, K_ALL, V_NUM, CHK_POW2, 512, 65536,
	  "must be a power of two from 512 to 65536", F(blocksize), 0 },
	{ "MAXTRANSFERSIZE", OPT_MAXTRANSFERSIZE, K_ALL, V_NUM, CHK_MUL64K, 65536, 4194304,
	  "must be a multiple of 65536 from 65536 to 4194304", F(maxtransfersize), 0 },
	{ "BUFFERCOUNT", OPT_BUFFERCOUNT, K_ALL, V_NUM, CHK_RANGE, 1, STMT_MAX_BUFFERCOUNT,
	  "must be from 1 to 1024", F(buffercount), 0 },
	{ "REPLACE", OPT_REPLACE, K_RESTORE, V_NONE, CHK_RANGE, 0, 0, "", F(replace), 0 },
	{ "STATS", OPT_STATS, K_ALL, V_OPTNUM, CHK_RANGE, 1, 100, "must be from 1 to 100", F(stats),
	  0 },
	{ "DESCRIPTION", OPT_DESCRIPTION, K_BACKUP, V_STR, CHK_RANGE, 0, STMT_MAX_DESCRIPTION,
	  "must be a string of at most 255 bytes", 0, 0 },
	{ "FAULT_ABORT_AFTER", OPT_FAULT_ABORT_AFTER, K_ALL, V_NUM, CHK_RANGE, 0, INT64_MAX,
	  "must be from 0 to 9223372036854775807", F(fault_abort_after), 1 },
	{ "FAULT_STALL", OPT_FAULT_STALL, K_ALL, V_NUM, CHK_RANGE, 0, STMT_MAX_MS,
	  "must be from 0 to 600000 (milliseconds)", F(fault_stall_ms), 0 },
	{ "FAULT_EXTRA_FLUSHES", OPT_FAULT_EXTRA_FLUSHES, K_BACKUP, V_NUM, CHK_RANGE, 0, 1000,
	  "must be from 0 to 1000", F(fault_extra_flushes), 0 },
	{ "FAULT_LATE_COMPLETE", OPT_FAULT_LATE_COMPLETE, K_BACKUP, V_NUM, CHK_RANGE, 0,
	  STMT_MAX_MS, "must be from 0 to 600000 (milliseconds)", F(fault_late_complete_ms), 0 },
};

static const struct optdef *find_opt(const char *name)
{
	for (size_t i = 0; i < sizeof(optdefs) / sizeof(optdefs[0]); i++)
		if (strcasecmp(optdefs[i].name, name) == 0)
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

static void parse_string_value(struct parser *ps, struct stmt *st, const struct optdef *o)
{
	if (ps->tok.type != T_STRING) {
		char buf[96];

		perr(ps, "invalid %s %s: %s", o->name, tok_desc(&ps->tok, buf, sizeof(buf)),
		     o->rule);
		return;
	}
	if (ps->tok.too_long || strlen(ps->tok.text) > STMT_MAX_DESCRIPTION) {
		perr(ps, "invalid %s '%.40s...': %s", o->name, ps->tok.text, o->rule);
		return;
	}
	for (const char *c = ps->tok.text; *c; c++) {
		if ((unsigned char)*c < 0x20 || *c == 0x7f) {
			perr(ps, "invalid %s '%.40s': must not contain control characters", o->name,
			     ps->tok.text);
			return;
		}
	}
	strcpy(st->description, ps->tok.text);
	next(ps);
}

static void parse_option(struct parser *ps, struct stmt *st)
{
	const struct optdef *o;

	if (ps->tok.type != T_WORD) {
		expected(ps, "an option name after WITH or ','");
		return;
	}
	o = find_opt(ps->tok.text);
	if (!o) {
		perr(ps,
		     "unknown option '%.60s' at line %u, column %u: known options are BLOCKSIZE, BUFFERCOUNT, MAXTRANSFERSIZE, REPLACE, STATS, DESCRIPTION, FAULT_ABORT_AFTER, FAULT_STALL, FAULT_EXTRA_FLUSHES, FAULT_LATE_COMPLETE",
		     ps->tok.text, ps->tok.line, ps->tok.col);
		return;
	}
	if (!(o->kinds & (1u << st->kind))) {
		perr(ps, "option %s is not valid with %s", o->name, stmt_kind_name(st->kind));
		return;
	}
	if (st->given & o->bit) {
		perr(ps, "option %s given twice", o->name);
		return;
	}
	st->given |= o->bit;
	next(ps);
	if (o->vt == V_NONE) {
		st->replace = 1;
		return;
	}
	if (o->vt == V_OPTNUM && !is_punct(ps, '='))
		return;
	if (!expect_punct(ps, '=', " after the option name"))
		return;
	if (o->vt == V_STR)
		parse_string_value(ps, st, o);
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
		if (!expect_word(ps, "DATABASE", " after BACKUP"))
			return;
		parse_dbname(ps, st);
		if (!ps->failed)
			expect_word(ps, "TO", " after the database name");
		return;
	}
	if (!accept_word(ps, "RESTORE")) {
		expected(ps, "BACKUP or RESTORE");
		return;
	}
	if (accept_word(ps, "DATABASE")) {
		st->kind = STMT_RESTORE;
		parse_dbname(ps, st);
	} else if (accept_word(ps, "VERIFYONLY")) {
		st->kind = STMT_VERIFYONLY;
	} else if (accept_word(ps, "HEADERONLY")) {
		st->kind = STMT_HEADERONLY;
	} else {
		expected(ps, "DATABASE, VERIFYONLY or HEADERONLY after RESTORE");
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
}

static void check_combination(struct parser *ps, const struct stmt *st)
{
	uint64_t bytes = (uint64_t)st->buffercount * st->maxtransfersize;

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
	return ps.failed ? -1 : 0;
}

const char *stmt_kind_name(enum stmt_kind kind)
{
	switch (kind) {
	case STMT_BACKUP: return "BACKUP DATABASE";
	case STMT_RESTORE: return "RESTORE DATABASE";
	case STMT_VERIFYONLY: return "RESTORE VERIFYONLY";
	case STMT_HEADERONLY: return "RESTORE HEADERONLY";
	}
	return "?";
}
