//! The assembler: text in the syntax of docs/bytecode.md ("Assembly syntax") to a
//! [`Program`]. It checks syntax, labels and the ranges of register and buffer numbers;
//! everything else (unused fields, branch targets, buffers bound, falling off the end) is
//! the verifier's business. It never panics, whatever the input.
//!
//! ```
//! use megaring::vm::{assemble, verify};
//! let program = assemble("lane r1\nresult 0, r1\nhalt")?;
//! verify(&program, 0)?;
//! # Ok::<(), megaring::vm::VmError>(())
//! ```

use std::collections::HashMap;

use super::isa::{op_by_name, Form, Instr, Program, OPS};
use super::VmError;
use crate::ring::layout as p;

/// Assembles `source`, one instruction per line, into a program.
///
/// Errors are [`VmError::Syntax`] with the 1-based line and column of the offending token.
/// Labels may be used before they are defined; an undefined label is reported where it is
/// used. `assemble(&disassemble(&p)) == Ok(p)` for every program `p`
/// (see [`disassemble`](super::disasm::disassemble)).
pub fn assemble(source: &str) -> Result<Program, VmError> {
    let mut asm = Assembler::default();
    for (index, text) in source.lines().enumerate() {
        asm.line(index + 1, text)?;
    }
    asm.finish()
}

/// A label defined in the source: the instruction it names and the line defining it.
struct Definition {
    index: u32,
    line: usize,
}

/// A use of a label, patched into `instrs[instr].imm` once every label is known.
struct Fixup<'a> {
    instr: usize,
    name: &'a str,
    line: usize,
    column: usize,
}

#[derive(Default)]
struct Assembler<'a> {
    instrs: Vec<Instr>,
    labels: HashMap<&'a str, Definition>,
    fixups: Vec<Fixup<'a>>,
}

impl<'a> Assembler<'a> {
    fn line(&mut self, number: usize, text: &'a str) -> Result<(), VmError> {
        let code = match text.find([';', '#']) {
            Some(at) => &text[..at],
            None => text,
        };
        let mut line = Line::lex(number, code)?;
        // Labels: `name:` before the instruction (several are allowed, all naming it).
        while let (Some(name), Some(colon)) = (line.peek_at(0), line.peek_at(1)) {
            if name.kind != Kind::Word || colon.kind != Kind::Colon {
                break;
            }
            self.define(number, &name)?;
            line.pos += 2;
        }
        let Some(head) = line.next() else {
            return Ok(());
        };
        if head.kind != Kind::Word {
            return Err(line.error(Some(&head), "a mnemonic or a label"));
        }
        let instr = if head.text.starts_with('.') {
            self.directive(&mut line, &head)?
        } else {
            self.instruction(&mut line, &head)?
        };
        line.end(&head)?;
        self.instrs.push(instr);
        Ok(())
    }

    fn define(&mut self, number: usize, name: &Token<'a>) -> Result<(), VmError> {
        if !is_label(name.text) {
            return Err(syntax(
                number,
                name.column,
                format!(
                    "invalid label name `{}`; a label is a letter or `_`, then letters, digits, `_` or `.`",
                    name.text
                ),
            ));
        }
        if let Some(first) = self.labels.get(name.text) {
            return Err(syntax(
                number,
                name.column,
                format!("label `{}` is defined twice (first on line {})", name.text, first.line),
            ));
        }
        let index = self.instrs.len() as u32;
        self.labels.insert(name.text, Definition { index, line: number });
        Ok(())
    }

    fn directive(&mut self, line: &mut Line<'a>, head: &Token<'a>) -> Result<Instr, VmError> {
        match head.text {
            ".word" => {
                let first = line.uint("the first instruction word (a u32)")?;
                line.comma()?;
                let second = line.uint("the second instruction word (a u32)")?;
                Ok(Instr::decode([first, second]))
            }
            ".instr" => {
                let op = line.uint("the opcode field (a u32)")?;
                line.comma()?;
                let d = line.byte("the `d` field (0..255)")?;
                line.comma()?;
                let a = line.byte("the `a` field (0..255)")?;
                line.comma()?;
                let b = line.byte("the `b` field (0..255)")?;
                line.comma()?;
                let imm = line.uint("the `imm` field (a u32)")?;
                Ok(Instr { op, d, a, b, imm })
            }
            other => Err(syntax(
                line.number,
                head.column,
                format!("unknown directive `{other}`; expected `.word` or `.instr`"),
            )),
        }
    }

    fn instruction(&mut self, line: &mut Line<'a>, head: &Token<'a>) -> Result<Instr, VmError> {
        let Some(info) = op_by_name(head.text) else {
            let mut message = format!("unknown mnemonic `{}`", head.text);
            if let Some(near) = suggest(head.text, OPS.iter().map(|o| o.name)) {
                message.push_str(&format!("; did you mean `{near}`?"));
            }
            return Err(syntax(line.number, head.column, message));
        };
        let mut i = Instr {
            op: info.code,
            ..Instr::default()
        };
        match info.form {
            Form::None => {}
            Form::Target => i.imm = self.target(line)?,
            Form::CondTarget => {
                i.a = line.register()?;
                line.comma()?;
                i.imm = self.target(line)?;
            }
            Form::Loop => {
                i.d = line.register()?;
                line.comma()?;
                i.a = line.register()?;
                line.comma()?;
                i.b = line.register()?;
                line.comma()?;
                i.imm = self.target(line)?;
            }
            Form::DImm => {
                i.d = line.register()?;
                line.comma()?;
                i.imm = line.immediate()?;
            }
            Form::DA => {
                i.d = line.register()?;
                line.comma()?;
                i.a = line.register()?;
            }
            Form::DAB | Form::DAB4 => {
                i.d = line.register()?;
                line.comma()?;
                i.a = line.register()?;
                line.comma()?;
                i.b = line.register()?;
            }
            Form::DAImm => {
                i.d = line.register()?;
                line.comma()?;
                i.a = line.register()?;
                line.comma()?;
                i.imm = line.immediate()?;
            }
            Form::Select => {
                i.d = line.register()?;
                line.comma()?;
                i.a = line.register()?;
                line.comma()?;
                i.b = line.register()?;
                line.comma()?;
                i.imm = u32::from(line.register()?);
            }
            Form::Load | Form::Load4 => {
                i.d = line.register()?;
                line.comma()?;
                (i.imm, i.a) = line.memory()?;
            }
            Form::Store | Form::Store4 => {
                (i.imm, i.a) = line.memory()?;
                line.comma()?;
                i.b = line.register()?;
            }
            Form::Atomic | Form::Load4Op => {
                i.d = line.register()?;
                line.comma()?;
                (i.imm, i.a) = line.memory()?;
                line.comma()?;
                i.b = line.register()?;
            }
            Form::D => i.d = line.register()?,
            Form::Arg => {
                i.d = line.register()?;
                line.comma()?;
                i.imm = line.immediate()?;
            }
            Form::BufLen => {
                i.d = line.register()?;
                line.comma()?;
                i.imm = line.buffer()?;
            }
            Form::Result => {
                i.imm = line.immediate()?;
                line.comma()?;
                i.a = line.register()?;
            }
        }
        Ok(i)
    }

    /// A branch target: an instruction index, or a label resolved in [`Self::finish`].
    fn target(&mut self, line: &mut Line<'a>) -> Result<u32, VmError> {
        const WHAT: &str = "a label or an instruction index";
        let token = line.next();
        match token {
            Some(t) if t.kind == Kind::Word && t.text.starts_with(|c: char| c.is_ascii_digit()) => {
                parse_uint(t.text).map_err(|e| line.bad_number(&t, e, WHAT))
            }
            Some(t) if t.kind == Kind::Word && is_label(t.text) => {
                self.fixups.push(Fixup {
                    instr: self.instrs.len(),
                    name: t.text,
                    line: line.number,
                    column: t.column,
                });
                Ok(0)
            }
            other => Err(line.error(other.as_ref(), WHAT)),
        }
    }

    fn finish(self) -> Result<Program, VmError> {
        let mut instrs = self.instrs;
        for fixup in &self.fixups {
            let Some(definition) = self.labels.get(fixup.name) else {
                let mut message = format!("label `{}` is not defined", fixup.name);
                if let Some(near) = suggest(fixup.name, self.labels.keys().copied()) {
                    message.push_str(&format!("; did you mean `{near}`?"));
                }
                return Err(syntax(fixup.line, fixup.column, message));
            };
            if let Some(instr) = instrs.get_mut(fixup.instr) {
                instr.imm = definition.index;
            }
        }
        Ok(Program { instrs })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A run of letters, digits and `_ . + -`: mnemonic, label, register, number, directive.
    Word,
    Comma,
    Colon,
    Open,
    Close,
}

#[derive(Clone, Copy, Debug)]
struct Token<'a> {
    kind: Kind,
    text: &'a str,
    /// 1-based, in characters.
    column: usize,
}

/// The tokens of one line and a cursor over them.
struct Line<'a> {
    number: usize,
    tokens: Vec<Token<'a>>,
    pos: usize,
    /// Column just after the last token, where "end of line" errors point.
    end_column: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-')
}

fn is_label(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

fn syntax(line: usize, column: usize, message: String) -> VmError {
    VmError::Syntax { line, column, message }
}

/// Why a numeric token was rejected.
enum NumberError {
    /// Not a number of the accepted forms at all.
    Malformed,
    /// A number, but not representable in the field.
    Range(&'static str),
}

impl<'a> Line<'a> {
    fn lex(number: usize, code: &'a str) -> Result<Self, VmError> {
        let mut tokens = Vec::new();
        let mut end_column = 1;
        let mut chars = code.char_indices().zip(1usize..).peekable();
        while let Some(((start, c), column)) = chars.next() {
            let kind = match c {
                ',' => Kind::Comma,
                ':' => Kind::Colon,
                '[' => Kind::Open,
                ']' => Kind::Close,
                c if c.is_whitespace() => continue,
                c if is_word_char(c) => Kind::Word,
                c => {
                    return Err(syntax(
                        number,
                        column,
                        format!("unexpected character `{}`", c.escape_debug()),
                    ))
                }
            };
            let mut end = start + c.len_utf8();
            end_column = column + 1;
            if kind == Kind::Word {
                while let Some(&((at, next), next_column)) = chars.peek() {
                    if !is_word_char(next) {
                        break;
                    }
                    end = at + next.len_utf8();
                    end_column = next_column + 1;
                    chars.next();
                }
            }
            tokens.push(Token {
                kind,
                text: &code[start..end],
                column,
            });
        }
        Ok(Line {
            number,
            tokens,
            pos: 0,
            end_column,
        })
    }

    fn peek_at(&self, ahead: usize) -> Option<Token<'a>> {
        self.tokens.get(self.pos + ahead).copied()
    }

    fn next(&mut self) -> Option<Token<'a>> {
        let token = self.peek_at(0)?;
        self.pos += 1;
        Some(token)
    }

    /// "expected {expected}, found ..." at `found` (or at the end of the line).
    fn error(&self, found: Option<&Token<'a>>, expected: &str) -> VmError {
        match found {
            Some(t) => syntax(
                self.number,
                t.column,
                format!("expected {expected}, found `{}`", t.text),
            ),
            None => syntax(
                self.number,
                self.end_column,
                format!("expected {expected}, found end of line"),
            ),
        }
    }

    fn bad_number(&self, t: &Token<'a>, error: NumberError, expected: &str) -> VmError {
        match error {
            NumberError::Malformed => self.error(Some(t), expected),
            NumberError::Range(range) => syntax(
                self.number,
                t.column,
                format!("`{}` is out of range; expected {range}", t.text),
            ),
        }
    }

    fn punct(&mut self, kind: Kind, text: &str) -> Result<(), VmError> {
        match self.next() {
            Some(t) if t.kind == kind => Ok(()),
            other => Err(self.error(other.as_ref(), text)),
        }
    }

    fn comma(&mut self) -> Result<(), VmError> {
        self.punct(Kind::Comma, "`,`")
    }

    fn end(&mut self, head: &Token<'a>) -> Result<(), VmError> {
        match self.next() {
            None => Ok(()),
            Some(t) => Err(syntax(
                self.number,
                t.column,
                format!(
                    "expected end of line after the operands of `{}`, found `{}`",
                    head.text, t.text
                ),
            )),
        }
    }

    /// A word of the form `{prefix}{digits}` below `limit`.
    fn numbered(&mut self, prefix: char, limit: u32, expected: &str) -> Result<u32, VmError> {
        let token = self.next();
        let digits = token
            .filter(|t| t.kind == Kind::Word)
            .and_then(|t| t.text.strip_prefix(prefix))
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
        match (token, digits) {
            (Some(t), Some(digits)) => match digits.parse::<u32>() {
                Ok(n) if n < limit => Ok(n),
                _ => Err(syntax(
                    self.number,
                    t.column,
                    format!("`{}` is out of range; expected {expected}", t.text),
                )),
            },
            (other, _) => Err(self.error(other.as_ref(), expected)),
        }
    }

    fn register(&mut self) -> Result<u8, VmError> {
        let r = self.numbered('r', p::VM_REGISTERS, "a register r0..r31")?;
        Ok(r as u8)
    }

    fn buffer(&mut self) -> Result<u32, VmError> {
        self.numbered('b', p::VM_MAX_BUFFERS, "a buffer b0..b7")
    }

    /// `bN[rM]`: (buffer, index register).
    fn memory(&mut self) -> Result<(u32, u8), VmError> {
        let buffer = self.buffer()?;
        self.punct(Kind::Open, "`[` (as in `b0[r2]`)")?;
        let index = self.register()?;
        self.punct(Kind::Close, "`]`")?;
        Ok((buffer, index))
    }

    /// An immediate: decimal, negative decimal, hex or an f32 literal (`1.5f`).
    fn immediate(&mut self) -> Result<u32, VmError> {
        const WHAT: &str = "an immediate (42, -1, 0x1f or an f32 like 1.5f)";
        match self.next() {
            Some(t) if t.kind == Kind::Word => match parse_immediate(t.text) {
                Ok(value) => Ok(value),
                Err(NumberError::Malformed) if looks_like_float(t.text) => Err(syntax(
                    self.number,
                    t.column,
                    format!(
                        "expected {WHAT}, found `{0}`; write f32 literals with a trailing `f` (`{0}f`)",
                        t.text
                    ),
                )),
                Err(e) => Err(self.bad_number(&t, e, WHAT)),
            },
            other => Err(self.error(other.as_ref(), WHAT)),
        }
    }

    /// A u32 in decimal or hex.
    fn uint(&mut self, expected: &str) -> Result<u32, VmError> {
        match self.next() {
            Some(t) if t.kind == Kind::Word => parse_uint(t.text).map_err(|e| self.bad_number(&t, e, expected)),
            other => Err(self.error(other.as_ref(), expected)),
        }
    }

    /// A u8 in decimal or hex.
    fn byte(&mut self, expected: &str) -> Result<u8, VmError> {
        let token = self.peek_at(0);
        let value = self.uint(expected)?;
        match (u8::try_from(value), token) {
            (Ok(v), _) => Ok(v),
            (Err(_), Some(t)) => Err(self.bad_number(&t, NumberError::Range("0..255"), expected)),
            (Err(_), None) => Err(self.error(None, expected)),
        }
    }
}

fn all_digits(s: &str, radix: u32) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_digit(radix))
}

/// Unsigned decimal or `0x` hex.
fn parse_uint(text: &str) -> Result<u32, NumberError> {
    const RANGE: NumberError = NumberError::Range("0..4294967295");
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        if !all_digits(hex, 16) {
            return Err(NumberError::Malformed);
        }
        return u32::from_str_radix(hex, 16).map_err(|_| RANGE);
    }
    if !all_digits(text, 10) {
        return Err(NumberError::Malformed);
    }
    text.parse::<u32>().map_err(|_| RANGE)
}

/// Whether `body` has the shape of a decimal float (`1.5`, `-0.25`, `1e3`, `.5`).
fn looks_like_float(body: &str) -> bool {
    let digits = body.strip_prefix('-').unwrap_or(body);
    digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && digits.chars().any(|c| c.is_ascii_digit())
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && digits.parse::<f32>().is_ok()
}

/// Any immediate form, as the 32 bits stored in `imm`.
fn parse_immediate(text: &str) -> Result<u32, NumberError> {
    if let Some(body) = text
        .strip_suffix('f')
        .filter(|_| !text.starts_with("0x") && !text.starts_with("0X"))
    {
        if !looks_like_float(body) {
            return Err(NumberError::Malformed);
        }
        return match body.parse::<f32>() {
            Ok(v) if v.is_finite() => Ok(v.to_bits()),
            _ => Err(NumberError::Range("a finite f32")),
        };
    }
    if let Some(magnitude) = text.strip_prefix('-') {
        if !all_digits(magnitude, 10) {
            return Err(NumberError::Malformed);
        }
        return match magnitude.parse::<u64>() {
            Ok(m) if m <= 1 << 31 => Ok((m as u32).wrapping_neg()),
            _ => Err(NumberError::Range("-2147483648..4294967295")),
        };
    }
    parse_uint(text).map_err(|e| match e {
        NumberError::Range(_) => NumberError::Range("-2147483648..4294967295"),
        e => e,
    })
}

/// The candidate nearest to `word`, if it is a plausible typo of it.
fn suggest<'n>(word: &str, candidates: impl Iterator<Item = &'n str>) -> Option<&'n str> {
    if word.len() > 32 {
        return None;
    }
    let lower = word.to_ascii_lowercase();
    candidates
        .filter(|c| c.len() <= 40)
        .map(|c| (if c == lower { 0 } else { distance(word, c) }, c))
        .filter(|&(d, _)| d <= 2 && d < word.chars().count())
        .min_by_key(|&(d, c)| (d, c.len(), c.to_owned()))
        .map(|(_, c)| c)
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, &cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::verify;

    fn i(op: u32, d: u8, a: u8, b: u8, imm: u32) -> Instr {
        Instr { op, d, a, b, imm }
    }

    /// The error's (line, column, message), or a panic if assembly succeeded.
    fn err(source: &str) -> (usize, usize, String) {
        match assemble(source) {
            Err(VmError::Syntax { line, column, message }) => (line, column, message),
            other => panic!("expected a syntax error for {source:?}, got {other:?}"),
        }
    }

    #[test]
    fn assembles_a_loop() {
        let source = "\
; sum of 1..=n
        arg r1, 0          # n
        movi r2, 0         ; sum
loop:   brz r1, done
        add r2, r2, r1
        addi r1, r1, -1
        jmp loop
done:
        result 0, r2
        halt
";
        let program = assemble(source).unwrap();
        assert_eq!(
            program.instrs,
            vec![
                i(p::OP_ARG, 1, 0, 0, 0),
                i(p::OP_MOVI, 2, 0, 0, 0),
                i(p::OP_BRZ, 0, 1, 0, 6),
                i(p::OP_ADD, 2, 2, 1, 0),
                i(p::OP_ADDI, 1, 1, 0, u32::MAX),
                i(p::OP_JMP, 0, 0, 0, 2),
                i(p::OP_RESULT, 0, 2, 0, 0),
                i(p::OP_HALT, 0, 0, 0, 0),
            ]
        );
        verify(&program, 0).unwrap();
    }

    #[test]
    fn every_operand_form() {
        let source = "\
nop
sel r1, r2, r3, r4
ld32 r1, b0[r2]
st8 b7[r31], r3
atomic.cas r1, b2[r2], r3
lane r5
arg r1, 2
buflen r1, b3
red.fmin r4, r5
mov r1,r2
brnz r0, 0x0
jmp 1
start: end: halt
.word 0x00030201, 7
.instr 300, 1, 2, 255, 0xffffffff
";
        let program = assemble(source).unwrap();
        assert_eq!(
            program.instrs,
            vec![
                i(p::OP_NOP, 0, 0, 0, 0),
                i(p::OP_SEL, 1, 2, 3, 4),
                i(p::OP_LD32, 1, 2, 0, 0),
                i(p::OP_ST8, 0, 31, 3, 7),
                i(p::OP_ATOMIC_CAS, 1, 2, 3, 2),
                i(p::OP_LANE, 5, 0, 0, 0),
                i(p::OP_ARG, 1, 0, 0, 2),
                i(p::OP_BUFLEN, 1, 0, 0, 3),
                i(p::OP_RED_FMIN, 4, 5, 0, 0),
                i(p::OP_MOV, 1, 2, 0, 0),
                i(p::OP_BRNZ, 0, 0, 0, 0),
                i(p::OP_JMP, 0, 0, 0, 1),
                i(p::OP_HALT, 0, 0, 0, 0),
                i(1, 2, 3, 0, 7),
                i(300, 1, 2, 255, u32::MAX),
            ]
        );
    }

    #[test]
    fn immediates() {
        let imm = |text: &str| assemble(&format!("movi r0, {text}")).map(|p| p.instrs[0].imm);
        assert_eq!(imm("42"), Ok(42));
        assert_eq!(imm("-1"), Ok(u32::MAX));
        assert_eq!(imm("-2147483648"), Ok(0x8000_0000));
        assert_eq!(imm("4294967295"), Ok(u32::MAX));
        assert_eq!(imm("0x1F"), Ok(31));
        assert_eq!(imm("0x1f"), Ok(31));
        assert_eq!(imm("1.5f"), Ok(1.5f32.to_bits()));
        assert_eq!(imm("-0.25f"), Ok((-0.25f32).to_bits()));
        assert_eq!(imm("1e3f"), Ok(1000f32.to_bits()));
        assert_eq!(imm("2f"), Ok(2f32.to_bits()));
        assert_eq!(imm("-0.0f"), Ok(0x8000_0000));
    }

    #[test]
    fn unknown_mnemonic_suggests_a_near_one() {
        let (line, column, message) = err("halt\n   ad r1, r2, r3\n");
        assert_eq!((line, column), (2, 4));
        assert_eq!(message, "unknown mnemonic `ad`; did you mean `add`?");
        assert_eq!(
            err("atomic.ad r1, b0[r2], r3").2,
            "unknown mnemonic `atomic.ad`; did you mean `atomic.add`?"
        );
        assert_eq!(err("HALT").2, "unknown mnemonic `HALT`; did you mean `halt`?");
        assert_eq!(err("frobnicate r1").2, "unknown mnemonic `frobnicate`");
        assert_eq!(
            err(".byte 1").2,
            "unknown directive `.byte`; expected `.word` or `.instr`"
        );
    }

    #[test]
    fn register_errors() {
        let (line, column, message) = err("add r1, x5, r3");
        assert_eq!((line, column), (1, 9));
        assert_eq!(message, "expected a register r0..r31, found `x5`");
        assert_eq!(
            err("mov r1, r32"),
            (1, 9, "`r32` is out of range; expected a register r0..r31".into())
        );
        assert_eq!(
            err("mov r1, r99999999999").2,
            "`r99999999999` is out of range; expected a register r0..r31"
        );
        assert_eq!(err("lane b1").2, "expected a register r0..r31, found `b1`");
        assert_eq!(err("lane r").2, "expected a register r0..r31, found `r`");
    }

    #[test]
    fn buffer_errors() {
        assert_eq!(
            err("ld32 r1, b8[r2]"),
            (1, 10, "`b8` is out of range; expected a buffer b0..b7".into())
        );
        assert_eq!(
            err("buflen r1, r2"),
            (1, 12, "expected a buffer b0..b7, found `r2`".into())
        );
        assert_eq!(
            err("ld32 r1, b0 r2"),
            (1, 13, "expected `[` (as in `b0[r2]`), found `r2`".into())
        );
        assert_eq!(err("st32 b0[r2, r3"), (1, 11, "expected `]`, found `,`".into()));
    }

    #[test]
    fn punctuation_and_end_of_line() {
        assert_eq!(err("add r1 r2, r3"), (1, 8, "expected `,`, found `r2`".into()));
        assert_eq!(
            err("add r1, r2,"),
            (1, 12, "expected a register r0..r31, found end of line".into())
        );
        assert_eq!(
            err("add r1, r2   ; comment"),
            (1, 11, "expected `,`, found end of line".into())
        );
        assert_eq!(
            err("halt r1"),
            (
                1,
                6,
                "expected end of line after the operands of `halt`, found `r1`".into()
            )
        );
        assert_eq!(
            err("  , halt"),
            (1, 3, "expected a mnemonic or a label, found `,`".into())
        );
        assert_eq!(err("add r1, r2, r3 @"), (1, 16, "unexpected character `@`".into()));
        assert_eq!(err("mov r1, r2\nmov é, r2"), (2, 5, "unexpected character `é`".into()));
    }

    #[test]
    fn immediate_errors() {
        let what = "an immediate (42, -1, 0x1f or an f32 like 1.5f)";
        assert_eq!(err("movi r1, zz"), (1, 10, format!("expected {what}, found `zz`")));
        assert_eq!(
            err("movi r1, 4294967296"),
            (
                1,
                10,
                "`4294967296` is out of range; expected -2147483648..4294967295".into()
            )
        );
        assert_eq!(err("addi r1, r1, -2147483649").1, 14);
        assert_eq!(
            err("movi r1, 0x100000000").2,
            "`0x100000000` is out of range; expected -2147483648..4294967295"
        );
        assert_eq!(
            err("movi r1, 1e50f").2,
            "`1e50f` is out of range; expected a finite f32"
        );
        assert_eq!(
            err("movi r1, 1.5").2,
            format!("expected {what}, found `1.5`; write f32 literals with a trailing `f` (`1.5f`)")
        );
        assert_eq!(err("movi r1, inff").2, format!("expected {what}, found `inff`"));
        assert_eq!(err("movi r1, 0x").2, format!("expected {what}, found `0x`"));
        assert_eq!(err("movi r1, +5").2, format!("expected {what}, found `+5`"));
        assert_eq!(err(".word 1").2, "expected `,`, found end of line");
        assert_eq!(
            err(".word -1, 0").2,
            "expected the first instruction word (a u32), found `-1`"
        );
        assert_eq!(
            err(".instr 1, 256, 0, 0, 0"),
            (1, 11, "`256` is out of range; expected 0..255".into())
        );
    }

    #[test]
    fn label_errors() {
        let (line, column, message) = err("\n\nloop: nop\n  loop: halt\n");
        assert_eq!((line, column), (4, 3));
        assert_eq!(message, "label `loop` is defined twice (first on line 3)");
        let (line, column, message) = err("loop: brz r1, lop\njmp nowhere\nhalt");
        assert_eq!((line, column), (1, 15));
        assert_eq!(message, "label `lop` is not defined; did you mean `loop`?");
        assert_eq!(
            err("jmp -1"),
            (1, 5, "expected a label or an instruction index, found `-1`".into())
        );
        assert_eq!(
            err("jmp"),
            (
                1,
                4,
                "expected a label or an instruction index, found end of line".into()
            )
        );
        assert_eq!(
            err("1x: halt").2,
            "invalid label name `1x`; a label is a letter or `_`, then letters, digits, `_` or `.`"
        );
        assert_eq!(
            err("jmp 99999999999").2,
            "`99999999999` is out of range; expected 0..4294967295"
        );
    }

    #[test]
    fn labels_forward_backward_and_trailing() {
        let program = assemble("top: jmp end\nend: jmp top\nafter:\n").unwrap();
        assert_eq!(program.instrs, vec![i(p::OP_JMP, 0, 0, 0, 1), i(p::OP_JMP, 0, 0, 0, 0)]);
        // A label after the last instruction names the index one past the end.
        let program = assemble("jmp past\npast:").unwrap();
        assert_eq!(program.instrs[0].imm, 1);
        assert_eq!(assemble(""), Ok(Program::default()));
        assert_eq!(assemble("\r\n  ; nothing\r\n# here"), Ok(Program::default()));
    }

    #[test]
    fn near_matches() {
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(suggest("ad", OPS.iter().map(|o| o.name)), Some("add"));
        assert_eq!(suggest("x", OPS.iter().map(|o| o.name)), None);
    }
}
