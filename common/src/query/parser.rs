//! Recursive-descent parser from tokens to [`Statement`]s. Owns the grammar, which words
//! are reserved, the nesting limit, and the positions and wording of syntax errors.

use serde_json::{Number, Value};

use super::ast::{
    Amount, ArithOp, CompareOp, CreateIndex, DropIndex, Expr, Field, InList, Insert, IsTest,
    Mutation, OnConflict, OrderKey, Path, Projection, Removal, Select, Statement, Update,
};
use super::error::{Position, QueryError, excerpt};
use super::lexer::{Quote, Sym, Tok, Token, tokenize};
use super::name::check_name;

/// Deepest nesting of parentheses, NOT, unary minus and literals (and longest chain of
/// arithmetic operators) accepted, so that no input can exhaust the stack.
pub const MAX_NESTING: usize = 64;

/// Words that cannot be an unquoted path root, alias, collection or index name. Other
/// keywords (`COUNT`, `ID`, `INDEX`, `WITH`, ...) are recognised only where they are
/// expected, so they stay usable as field names.
const RESERVED: &[&str] = &[
    "AND",
    "APPLY",
    "AS",
    "ASC",
    "BY",
    "CREATE",
    "DELETE",
    "DESC",
    "DOCUMENTS",
    "DROP",
    "EVICT",
    "EXPLAIN",
    "FALSE",
    "FROM",
    "IN",
    "INSERT",
    "INTO",
    "IS",
    "LIKE",
    "LIMIT",
    "MISSING",
    "NOT",
    "NULL",
    "OFFSET",
    "ON",
    "OR",
    "ORDER",
    "SELECT",
    "SET",
    "TRUE",
    "UNSET",
    "UPDATE",
    "WHERE",
];

const STATEMENT: &str =
    "a statement (SELECT, INSERT, UPDATE, DELETE, EVICT, CREATE INDEX, DROP INDEX or EXPLAIN)";

/// Parses exactly one statement (a trailing `;` is allowed).
pub fn parse(src: &str) -> Result<Statement, QueryError> {
    let mut parser = Parser::new(src)?;
    let statement = parser.statement()?;
    while parser.eat_sym(Sym::Semicolon) {}
    parser.expect_eof("';' or end of input")?;
    Ok(statement)
}

/// Parses a script of statements separated by `;` (empty statements are skipped), e.g. the
/// body of a transaction.
pub fn parse_script(src: &str) -> Result<Vec<Statement>, QueryError> {
    let mut parser = Parser::new(src)?;
    let mut statements = Vec::new();
    loop {
        while parser.eat_sym(Sym::Semicolon) {}
        if parser.at_eof() {
            return Ok(statements);
        }
        statements.push(parser.statement()?);
        if !parser.eat_sym(Sym::Semicolon) {
            parser.expect_eof("';' or end of input")?;
        }
    }
}

/// Parses a lone expression, e.g. a subscription filter.
pub fn parse_expression(src: &str) -> Result<Expr, QueryError> {
    let mut parser = Parser::new(src)?;
    let expr = parser.expr()?;
    parser.expect_eof("an operator or end of input")?;
    Ok(expr)
}

fn is_reserved(word: &str) -> bool {
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(word))
}

/// The number written `text`, negated when `negative`: an `i64` or `u64` when it is an
/// integer that fits, an `f64` otherwise; `None` when it is not finite.
fn number(text: &str, negative: bool) -> Option<Number> {
    let signed = if negative {
        format!("-{text}")
    } else {
        text.to_owned()
    };
    if text.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = signed.parse::<i64>() {
            return Some(i.into());
        }
        if let Ok(u) = signed.parse::<u64>() {
            return Some(u.into());
        }
    }
    signed.parse::<f64>().ok().and_then(Number::from_f64)
}

struct Parser<'s> {
    src: &'s str,
    /// Never empty: the last token is `Eof`.
    tokens: Vec<Token>,
    /// Index of the current token; never past the `Eof`.
    pos: usize,
    /// Current nesting, checked against [`MAX_NESTING`].
    depth: usize,
}

impl<'s> Parser<'s> {
    fn new(src: &'s str) -> Result<Self, QueryError> {
        Ok(Parser {
            src,
            tokens: tokenize(src)?,
            pos: 0,
            depth: 0,
        })
    }

    // ---- token access -------------------------------------------------------------------

    fn peek(&self) -> &Token {
        &self.tokens[self.pos]
    }

    fn peek_nth(&self, n: usize) -> &Token {
        &self.tokens[(self.pos + n).min(self.tokens.len() - 1)]
    }

    fn advance(&mut self) -> Token {
        let token = self.tokens[self.pos].clone();
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        token
    }

    fn at_eof(&self) -> bool {
        self.peek().tok == Tok::Eof
    }

    fn at_kw(&self, keyword: &str) -> bool {
        matches!(&self.peek().tok, Tok::Word(w) if w.eq_ignore_ascii_case(keyword))
    }

    fn eat_kw(&mut self, keyword: &str) -> bool {
        let hit = self.at_kw(keyword);
        if hit {
            self.advance();
        }
        hit
    }

    fn expect_kw(&mut self, keyword: &str) -> Result<(), QueryError> {
        if self.eat_kw(keyword) {
            Ok(())
        } else {
            Err(self.unexpected(keyword))
        }
    }

    fn at_sym(&self, sym: Sym) -> bool {
        self.peek().tok == Tok::Sym(sym)
    }

    fn eat_sym(&mut self, sym: Sym) -> bool {
        let hit = self.at_sym(sym);
        if hit {
            self.advance();
        }
        hit
    }

    fn expect_sym(&mut self, sym: Sym, shown: &str) -> Result<(), QueryError> {
        if self.eat_sym(sym) {
            Ok(())
        } else {
            Err(self.unexpected(shown))
        }
    }

    fn expect_eof(&self, expected: &str) -> Result<(), QueryError> {
        if self.at_eof() {
            Ok(())
        } else {
            Err(self.unexpected(expected))
        }
    }

    // ---- errors -------------------------------------------------------------------------

    fn position(&self, offset: usize) -> Position {
        Position::of_offset(self.src, offset)
    }

    /// "expected `expected`, found <the current token>".
    fn unexpected(&self, expected: impl Into<String>) -> QueryError {
        let token = self.peek();
        let text = excerpt(&self.src[token.start..token.end]);
        let found = match token.tok {
            Tok::Eof => "end of input".to_owned(),
            Tok::Str(_) => format!("string {text}"),
            _ => format!("'{text}'"),
        };
        QueryError::Unexpected {
            at: self.position(token.start),
            expected: expected.into(),
            found,
        }
    }

    fn invalid(&self, offset: usize, message: impl Into<String>) -> QueryError {
        QueryError::Invalid {
            at: self.position(offset),
            message: message.into(),
        }
    }

    /// Enters one nesting level; fails beyond [`MAX_NESTING`].
    fn enter(&mut self) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.invalid(
                self.peek().start,
                format!("expression nested too deeply (more than {MAX_NESTING} levels)"),
            ));
        }
        Ok(())
    }

    fn leave(&mut self, levels: usize) {
        self.depth = self.depth.saturating_sub(levels);
    }

    // ---- statements ---------------------------------------------------------------------

    fn statement(&mut self) -> Result<Statement, QueryError> {
        let Tok::Word(word) = &self.peek().tok else {
            return Err(self.unexpected(STATEMENT));
        };
        match word.to_ascii_uppercase().as_str() {
            "SELECT" => self.select().map(Statement::Select),
            "INSERT" => self.insert().map(Statement::Insert),
            "UPDATE" => self.update().map(Statement::Update),
            "DELETE" => self.removal().map(Statement::Delete),
            "EVICT" => self.removal().map(Statement::Evict),
            "CREATE" => self.create_index().map(Statement::CreateIndex),
            "DROP" => self.drop_index().map(Statement::DropIndex),
            "EXPLAIN" => {
                self.advance();
                if !self.at_kw("SELECT") {
                    return Err(self.unexpected("SELECT"));
                }
                self.select().map(Statement::Explain)
            }
            _ => Err(self.unexpected(STATEMENT)),
        }
    }

    fn select(&mut self) -> Result<Select, QueryError> {
        self.expect_kw("SELECT")?;
        let projection = self.projection()?;
        self.expect_kw("FROM")?;
        let collection = self.name("collection")?;
        let filter = self.opt_where()?;
        let mut order_by = Vec::new();
        if self.eat_kw("ORDER") {
            self.expect_kw("BY")?;
            loop {
                let expr = self.expr()?;
                let descending = self.eat_kw("DESC");
                if !descending {
                    self.eat_kw("ASC");
                }
                order_by.push(OrderKey { expr, descending });
                if !self.eat_sym(Sym::Comma) {
                    break;
                }
            }
        }
        let limit = if self.eat_kw("LIMIT") {
            Some(self.amount()?)
        } else {
            None
        };
        let offset = if self.eat_kw("OFFSET") {
            Some(self.amount()?)
        } else {
            None
        };
        Ok(Select {
            projection,
            collection,
            filter,
            order_by,
            limit,
            offset,
        })
    }

    fn projection(&mut self) -> Result<Projection, QueryError> {
        if self.eat_sym(Sym::Star) {
            return Ok(Projection::All);
        }
        if self.at_kw("COUNT") && self.peek_nth(1).tok == Tok::Sym(Sym::LParen) {
            self.advance();
            self.advance();
            self.expect_sym(Sym::Star, "'*'")?;
            self.expect_sym(Sym::RParen, "')'")?;
            let alias = self.opt_alias()?;
            return Ok(Projection::Count { alias });
        }
        if !self.at_path_start() {
            return Err(self.unexpected("'*', COUNT(*) or a path"));
        }
        let mut fields = Vec::new();
        loop {
            let path = self.path()?;
            let alias = self.opt_alias()?;
            fields.push(Field { path, alias });
            if !self.eat_sym(Sym::Comma) {
                return Ok(Projection::Fields(fields));
            }
        }
    }

    fn opt_alias(&mut self) -> Result<Option<String>, QueryError> {
        if !self.eat_kw("AS") {
            return Ok(None);
        }
        let alias = match &self.peek().tok {
            Tok::Word(w) if !is_reserved(w) => w.clone(),
            Tok::Quoted(w, _) => w.clone(),
            _ => return Err(self.unexpected("an alias")),
        };
        self.advance();
        Ok(Some(alias))
    }

    /// LIMIT or OFFSET operand: a non-negative integer literal or a parameter.
    fn amount(&mut self) -> Result<Amount, QueryError> {
        const EXPECTED: &str = "a non-negative integer or a parameter";
        match &self.peek().tok {
            Tok::Sym(Sym::Colon) => Ok(Amount::Param(self.param()?)),
            Tok::Number(text) if text.bytes().all(|b| b.is_ascii_digit()) => {
                let value = text.parse::<u64>().map_err(|_| {
                    self.invalid(self.peek().start, format!("{text} is too large a count"))
                })?;
                self.advance();
                Ok(Amount::Value(value))
            }
            _ => Err(self.unexpected(EXPECTED)),
        }
    }

    fn insert(&mut self) -> Result<Insert, QueryError> {
        self.expect_kw("INSERT")?;
        self.expect_kw("INTO")?;
        let collection = self.name("collection")?;
        self.expect_kw("DOCUMENTS")?;
        let mut documents = Vec::new();
        loop {
            self.expect_sym(Sym::LParen, "'('")?;
            documents.push(self.json_value()?);
            self.expect_sym(Sym::RParen, "')'")?;
            if !self.eat_sym(Sym::Comma) {
                break;
            }
        }
        let mut on_conflict = OnConflict::Fail;
        if self.eat_kw("ON") {
            self.expect_kw("ID")?;
            self.expect_kw("CONFLICT")?;
            on_conflict = if self.eat_kw("FAIL") {
                OnConflict::Fail
            } else if self.eat_kw("DO") {
                if self.eat_kw("NOTHING") {
                    OnConflict::DoNothing
                } else if self.eat_kw("UPDATE") {
                    OnConflict::DoUpdate
                } else {
                    return Err(self.unexpected("NOTHING or UPDATE"));
                }
            } else {
                return Err(self.unexpected("FAIL or DO"));
            };
        }
        Ok(Insert {
            collection,
            documents,
            on_conflict,
        })
    }

    fn update(&mut self) -> Result<Update, QueryError> {
        self.expect_kw("UPDATE")?;
        let collection = self.name("collection")?;
        let mut mutations = Vec::new();
        loop {
            if self.eat_kw("SET") {
                loop {
                    let path = self.target_path()?;
                    self.expect_sym(Sym::Eq, "'='")?;
                    mutations.push(Mutation::Set(path, self.expr()?));
                    if !self.eat_sym(Sym::Comma) {
                        break;
                    }
                }
            } else if self.eat_kw("UNSET") {
                loop {
                    mutations.push(Mutation::Unset(self.target_path()?));
                    if !self.eat_sym(Sym::Comma) {
                        break;
                    }
                }
            } else if self.eat_kw("APPLY") {
                loop {
                    let path = self.target_path()?;
                    if self.eat_kw("INCREMENT") {
                        self.expect_kw("BY")?;
                        mutations.push(Mutation::Increment(path, self.expr()?));
                    } else if self.eat_kw("RESTART") {
                        self.expect_kw("WITH")?;
                        mutations.push(Mutation::Restart(path, self.expr()?));
                    } else {
                        return Err(self.unexpected("INCREMENT BY or RESTART WITH"));
                    }
                    if !self.eat_sym(Sym::Comma) {
                        break;
                    }
                }
            } else if mutations.is_empty() {
                return Err(self.unexpected("SET, UNSET or APPLY"));
            } else {
                break;
            }
        }
        let filter = self.opt_where()?;
        Ok(Update {
            collection,
            mutations,
            filter,
        })
    }

    /// A path an UPDATE writes: anything but `_id`, which never changes.
    fn target_path(&mut self) -> Result<Path, QueryError> {
        let start = self.peek().start;
        let path = self.path()?;
        if path.is_id() {
            return Err(self.invalid(start, "_id cannot be changed"));
        }
        Ok(path)
    }

    /// `DELETE FROM c [WHERE ...]` or `EVICT FROM c [WHERE ...]`.
    fn removal(&mut self) -> Result<Removal, QueryError> {
        self.advance();
        self.expect_kw("FROM")?;
        let collection = self.name("collection")?;
        let filter = self.opt_where()?;
        Ok(Removal { collection, filter })
    }

    fn create_index(&mut self) -> Result<CreateIndex, QueryError> {
        self.expect_kw("CREATE")?;
        self.expect_kw("INDEX")?;
        let if_not_exists = self.eat_kw("IF");
        if if_not_exists {
            self.expect_kw("NOT")?;
            self.expect_kw("EXISTS")?;
        }
        let name = self.name("index")?;
        self.expect_kw("ON")?;
        let collection = self.name("collection")?;
        self.expect_sym(Sym::LParen, "'('")?;
        let path = self.path()?;
        self.expect_sym(Sym::RParen, "')'")?;
        Ok(CreateIndex {
            name,
            collection,
            path,
            if_not_exists,
        })
    }

    fn drop_index(&mut self) -> Result<DropIndex, QueryError> {
        self.expect_kw("DROP")?;
        self.expect_kw("INDEX")?;
        let if_exists = self.eat_kw("IF");
        if if_exists {
            self.expect_kw("EXISTS")?;
        }
        let name = self.name("index")?;
        self.expect_kw("ON")?;
        let collection = self.name("collection")?;
        Ok(DropIndex {
            name,
            collection,
            if_exists,
        })
    }

    fn opt_where(&mut self) -> Result<Option<Expr>, QueryError> {
        if self.eat_kw("WHERE") {
            self.expr().map(Some)
        } else {
            Ok(None)
        }
    }

    /// A collection or index name, quoted or not, checked against the naming rules.
    fn name(&mut self, kind: &'static str) -> Result<String, QueryError> {
        let token = self.peek().clone();
        let name = match token.tok {
            Tok::Word(w) if !is_reserved(&w) => w,
            Tok::Quoted(w, _) => w,
            _ => return Err(self.unexpected(format!("a {kind} name"))),
        };
        check_name(kind, &name, Some(self.position(token.start)))?;
        self.advance();
        Ok(name)
    }

    // ---- paths and parameters -----------------------------------------------------------

    fn at_path_start(&self) -> bool {
        match &self.peek().tok {
            Tok::Word(w) => !is_reserved(w),
            Tok::Quoted(..) => true,
            _ => false,
        }
    }

    /// `seg(.seg)*`; the first segment may not be a reserved word unless quoted, the
    /// following ones may be any word.
    fn path(&mut self) -> Result<Path, QueryError> {
        if !self.at_path_start() {
            return Err(self.unexpected("a path"));
        }
        let mut segments = Vec::new();
        loop {
            match self.advance().tok {
                Tok::Word(w) | Tok::Quoted(w, _) => segments.push(w),
                _ => return Err(self.unexpected("a field name")),
            }
            if !self.eat_sym(Sym::Dot) {
                return Ok(Path::new(segments));
            }
            if !matches!(self.peek().tok, Tok::Word(_) | Tok::Quoted(..)) {
                return Err(self.unexpected("a field name after '.'"));
            }
        }
    }

    /// `:name`, the name glued to the colon.
    fn param(&mut self) -> Result<String, QueryError> {
        let colon = self.advance();
        let next = self.peek();
        match &next.tok {
            Tok::Word(name) if next.start == colon.end => {
                let name = name.clone();
                self.advance();
                Ok(name)
            }
            Tok::Word(_) => Err(self.invalid(
                colon.start,
                "no space is allowed between ':' and the parameter name",
            )),
            _ => Err(self.unexpected("a parameter name after ':'")),
        }
    }

    // ---- expressions, loosest binding first ---------------------------------------------

    fn expr(&mut self) -> Result<Expr, QueryError> {
        self.enter()?;
        let expr = self.or()?;
        self.leave(1);
        Ok(expr)
    }

    fn or(&mut self) -> Result<Expr, QueryError> {
        let first = self.and()?;
        if !self.at_kw("OR") {
            return Ok(first);
        }
        let mut operands = vec![first];
        while self.eat_kw("OR") {
            operands.push(self.and()?);
        }
        Ok(Expr::Or(operands))
    }

    fn and(&mut self) -> Result<Expr, QueryError> {
        let first = self.not()?;
        if !self.at_kw("AND") {
            return Ok(first);
        }
        let mut operands = vec![first];
        while self.eat_kw("AND") {
            operands.push(self.not()?);
        }
        Ok(Expr::And(operands))
    }

    fn not(&mut self) -> Result<Expr, QueryError> {
        if !self.eat_kw("NOT") {
            return self.comparison();
        }
        self.enter()?;
        let inner = self.not()?;
        self.leave(1);
        Ok(Expr::Not(Box::new(inner)))
    }

    /// One comparison, IN, LIKE or IS; these do not chain (`a = b = c` is an error).
    fn comparison(&mut self) -> Result<Expr, QueryError> {
        let left = self.additive()?;
        if self.eat_kw("IS") {
            let negated = self.eat_kw("NOT");
            let test = if self.eat_kw("NULL") {
                IsTest::Null
            } else if self.eat_kw("MISSING") {
                IsTest::Missing
            } else {
                let expected = if negated {
                    "NULL or MISSING"
                } else {
                    "NOT, NULL or MISSING"
                };
                return Err(self.unexpected(expected));
            };
            return Ok(Expr::Is {
                expr: Box::new(left),
                test,
                negated,
            });
        }
        let negated = self.eat_kw("NOT");
        if self.eat_kw("IN") {
            let list = self.in_list()?;
            return Ok(Expr::In {
                expr: Box::new(left),
                list,
                negated,
            });
        }
        if self.eat_kw("LIKE") {
            let pattern = self.additive()?;
            return Ok(Expr::Like {
                expr: Box::new(left),
                pattern: Box::new(pattern),
                negated,
            });
        }
        if negated {
            return Err(self.unexpected("IN or LIKE"));
        }
        let op = match self.peek().tok {
            Tok::Sym(Sym::Eq) => CompareOp::Eq,
            Tok::Sym(Sym::Ne) => CompareOp::Ne,
            Tok::Sym(Sym::Lt) => CompareOp::Lt,
            Tok::Sym(Sym::Le) => CompareOp::Le,
            Tok::Sym(Sym::Gt) => CompareOp::Gt,
            Tok::Sym(Sym::Ge) => CompareOp::Ge,
            _ => return Ok(left),
        };
        self.advance();
        let right = self.additive()?;
        Ok(Expr::Compare {
            op,
            left: Box::new(left),
            right: Box::new(right),
        })
    }

    /// `(a, b)`, `[a, b]` or `:param`.
    fn in_list(&mut self) -> Result<InList, QueryError> {
        let close = match self.peek().tok {
            Tok::Sym(Sym::Colon) => return Ok(InList::Param(self.param()?)),
            Tok::Sym(Sym::LParen) => (Sym::RParen, "',' or ')'"),
            Tok::Sym(Sym::LBracket) => (Sym::RBracket, "',' or ']'"),
            _ => return Err(self.unexpected("'(', '[' or a parameter")),
        };
        self.advance();
        self.enter()?;
        let items = self.items(close)?;
        self.leave(1);
        Ok(InList::Exprs(items))
    }

    /// Comma-separated JSON-ish values up to and including the closing symbol.
    fn items(&mut self, (close, expected): (Sym, &str)) -> Result<Vec<Expr>, QueryError> {
        let mut items = Vec::new();
        if self.eat_sym(close) {
            return Ok(items);
        }
        loop {
            items.push(self.json_value()?);
            if self.eat_sym(close) {
                return Ok(items);
            }
            self.expect_sym(Sym::Comma, expected)?;
        }
    }

    fn additive(&mut self) -> Result<Expr, QueryError> {
        self.arithmetic(Self::multiplicative, |sym| match sym {
            Sym::Plus => Some(ArithOp::Add),
            Sym::Minus => Some(ArithOp::Sub),
            _ => None,
        })
    }

    fn multiplicative(&mut self) -> Result<Expr, QueryError> {
        self.arithmetic(Self::unary, |sym| match sym {
            Sym::Star => Some(ArithOp::Mul),
            Sym::Slash => Some(ArithOp::Div),
            _ => None,
        })
    }

    /// One left-associative level of arithmetic: `operand (op operand)*`.
    fn arithmetic(
        &mut self,
        operand: fn(&mut Self) -> Result<Expr, QueryError>,
        operator: fn(Sym) -> Option<ArithOp>,
    ) -> Result<Expr, QueryError> {
        let mut left = operand(self)?;
        let mut levels = 0;
        loop {
            let op = match self.peek().tok {
                Tok::Sym(sym) => operator(sym),
                _ => None,
            };
            let Some(op) = op else { break };
            self.advance();
            self.enter()?;
            levels += 1;
            let right = operand(self)?;
            left = Expr::Arith {
                op,
                left: Box::new(left),
                right: Box::new(right),
            };
        }
        self.leave(levels);
        Ok(left)
    }

    /// `-x`; a minus glued to a number literal gives a negative literal.
    fn unary(&mut self) -> Result<Expr, QueryError> {
        if !self.at_sym(Sym::Minus) {
            return self.primary();
        }
        self.advance();
        if let Tok::Number(text) = &self.peek().tok {
            let literal = self.number_literal(text, true)?;
            self.advance();
            return Ok(literal);
        }
        self.enter()?;
        let inner = self.unary()?;
        self.leave(1);
        Ok(Expr::Neg(Box::new(inner)))
    }

    fn number_literal(&self, text: &str, negative: bool) -> Result<Expr, QueryError> {
        number(text, negative)
            .map(|n| Expr::Literal(Value::Number(n)))
            .ok_or_else(|| {
                self.invalid(self.peek().start, format!("number {text} is out of range"))
            })
    }

    fn primary(&mut self) -> Result<Expr, QueryError> {
        let literal = match &self.peek().tok {
            Tok::Number(text) => self.number_literal(text, false)?,
            Tok::Str(s) => Expr::Literal(Value::String(s.clone())),
            Tok::Word(w) if w.eq_ignore_ascii_case("TRUE") => Expr::Literal(Value::Bool(true)),
            Tok::Word(w) if w.eq_ignore_ascii_case("FALSE") => Expr::Literal(Value::Bool(false)),
            Tok::Word(w) if w.eq_ignore_ascii_case("NULL") => Expr::Literal(Value::Null),
            Tok::Sym(Sym::Colon) => return self.param().map(Expr::Param),
            Tok::Sym(Sym::LParen) => {
                self.advance();
                let inner = self.expr()?;
                self.expect_sym(Sym::RParen, "')'")?;
                return Ok(inner);
            }
            Tok::Sym(Sym::LBrace) => return self.object(),
            Tok::Sym(Sym::LBracket) => {
                self.advance();
                self.enter()?;
                let items = self.items((Sym::RBracket, "',' or ']'"))?;
                self.leave(1);
                return Ok(Expr::Array(items));
            }
            _ if self.at_path_start() => return self.path().map(Expr::Path),
            _ => return Err(self.unexpected("an expression")),
        };
        self.advance();
        Ok(literal)
    }

    /// A value inside an object or array literal, or an INSERT document: as JSON, a
    /// double-quoted token here is a string, not an identifier.
    fn json_value(&mut self) -> Result<Expr, QueryError> {
        if let Tok::Quoted(s, Quote::Double) = &self.peek().tok {
            let literal = Expr::Literal(Value::String(s.clone()));
            self.advance();
            return Ok(literal);
        }
        self.expr()
    }

    /// `{key: value, ...}`; a key is a word, a quoted identifier or a string.
    fn object(&mut self) -> Result<Expr, QueryError> {
        self.advance();
        self.enter()?;
        let mut entries = Vec::new();
        if !self.eat_sym(Sym::RBrace) {
            loop {
                let key = match &self.peek().tok {
                    Tok::Word(k) | Tok::Quoted(k, _) | Tok::Str(k) => k.clone(),
                    _ => return Err(self.unexpected("an object key")),
                };
                self.advance();
                self.expect_sym(Sym::Colon, "':'")?;
                entries.push((key, self.json_value()?));
                if self.eat_sym(Sym::RBrace) {
                    break;
                }
                self.expect_sym(Sym::Comma, "',' or '}'")?;
            }
        }
        self.leave(1);
        Ok(Expr::Object(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(s: &str) -> Expr {
        Expr::Path(Path::new(s.split('.')))
    }

    fn lit(v: Value) -> Expr {
        Expr::Literal(v)
    }

    fn error(src: &str) -> String {
        parse(src).unwrap_err().to_string()
    }

    #[test]
    fn numbers_keep_integer_and_float_kinds() {
        assert_eq!(number("12", false), Some(12.into()));
        assert_eq!(number("12", true), Some((-12).into()));
        assert_eq!(number("9223372036854775808", true), Some(i64::MIN.into()));
        assert_eq!(number("18446744073709551615", false), Some(u64::MAX.into()));
        assert_eq!(
            number("18446744073709551616", false).and_then(|n| n.as_f64()),
            Some(18_446_744_073_709_551_616.0)
        );
        assert_eq!(number("1.5", true).and_then(|n| n.as_f64()), Some(-1.5));
        assert_eq!(number("1e999", false), None);
    }

    #[test]
    fn and_binds_tighter_than_or_and_not_tighter_than_and() {
        let e = parse_expression("a = 1 OR NOT b = 2 AND c = 3").unwrap();
        let cmp = |p: &str, n: i64| Expr::Compare {
            op: CompareOp::Eq,
            left: Box::new(path(p)),
            right: Box::new(lit(json!(n))),
        };
        assert_eq!(
            e,
            Expr::Or(vec![
                cmp("a", 1),
                Expr::And(vec![Expr::Not(Box::new(cmp("b", 2))), cmp("c", 3)]),
            ])
        );
    }

    #[test]
    fn multiplication_binds_tighter_than_addition() {
        let e = parse_expression("a + b * -c").unwrap();
        assert_eq!(
            e,
            Expr::Arith {
                op: ArithOp::Add,
                left: Box::new(path("a")),
                right: Box::new(Expr::Arith {
                    op: ArithOp::Mul,
                    left: Box::new(path("b")),
                    right: Box::new(Expr::Neg(Box::new(path("c")))),
                }),
            }
        );
    }

    #[test]
    fn keywords_after_a_dot_are_field_names() {
        assert_eq!(
            parse_expression("a.order.`from` = 1").unwrap(),
            Expr::Compare {
                op: CompareOp::Eq,
                left: Box::new(Expr::Path(Path::new(["a", "order", "from"]))),
                right: Box::new(lit(json!(1))),
            }
        );
    }

    #[test]
    fn unreserved_keywords_are_usable_as_field_names() {
        assert!(parse("SELECT count, id, index FROM c WHERE with = 1").is_ok());
    }

    #[test]
    fn comparisons_do_not_chain() {
        assert_eq!(
            parse_expression("a = b = c").unwrap_err().to_string(),
            "line 1, column 7: expected an operator or end of input, found '='"
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(
            parse_expression(&deep)
                .unwrap_err()
                .to_string()
                .contains("nested too deeply")
        );
        let nots = format!("{}a", "NOT ".repeat(10_000));
        assert!(parse_expression(&nots).is_err());
        let sum = format!("a{}", " + 1".repeat(10_000));
        assert!(parse_expression(&sum).is_err());
        let ok = format!("{}1{}", "(".repeat(50), ")".repeat(50));
        assert!(parse_expression(&ok).is_ok());
    }

    #[test]
    fn long_flat_and_chains_are_fine() {
        let chain = vec!["a = 1"; 5_000].join(" AND ");
        let Expr::And(operands) = parse_expression(&chain).unwrap() else {
            panic!("expected AND");
        };
        assert_eq!(operands.len(), 5_000);
    }

    #[test]
    fn spaced_parameter_is_explained() {
        assert_eq!(
            error("SELECT * FROM c WHERE a = : x"),
            "line 1, column 27: no space is allowed between ':' and the parameter name"
        );
    }

    #[test]
    fn json_double_quoted_values_are_strings() {
        let e = parse_expression(r#"{"a": "x", b: "y".z}"#);
        // "y".z is not a JSON value: the quoted token is a string, then '.' is unexpected.
        assert!(e.is_err());
        assert_eq!(
            parse_expression(r#"{"a":"x","b":true}"#).unwrap(),
            Expr::Object(vec![
                ("a".to_owned(), lit(json!("x"))),
                ("b".to_owned(), lit(json!(true))),
            ])
        );
    }
}
