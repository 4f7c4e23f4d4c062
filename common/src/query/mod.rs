//! The query language, in the spirit of Ditto's DQL: lexing, parsing, parameter binding and
//! evaluation over JSON documents. No I/O.
//!
//! The pipeline is [`parse`] (or [`parse_script`]) → [`Statement::bind`] → planning (by the
//! caller, helped by [`conjuncts`] and [`index_predicate`]) → evaluation ([`eval`],
//! [`truth`], [`Select::run`]). Evaluation follows SQL three-valued logic with one more
//! state, MISSING, for paths absent from a document (see [`Datum`] and [`Truth`]).
//!
//! ```
//! use serde_json::json;
//! use trellis_common::query::{Params, Statement, parse};
//!
//! let statement = parse("SELECT name FROM cars WHERE color IN :colors ORDER BY name LIMIT 1")?;
//! let params: Params = serde_json::from_value(json!({"colors": ["red", "blue"]})).unwrap();
//! let Statement::Select(select) = statement.bind(&params)? else { unreachable!() };
//! let docs = [json!({"name": "b", "color": "red"}), json!({"name": "a", "color": "blue"})];
//! assert_eq!(select.run(&docs)?, vec![json!({"name": "a"})]);
//! # Ok::<(), trellis_common::query::QueryError>(())
//! ```

mod ast;
mod bind;
mod compare;
mod error;
mod eval;
mod lexer;
mod like;
mod name;
mod parser;
mod predicate;
mod select;
mod value;

pub use ast::{
    Amount, ArithOp, CompareOp, CreateIndex, DropIndex, Expr, Field, InList, Insert, IsTest,
    Mutation, OnConflict, OrderKey, Path, Projection, Removal, Select, Statement, Update,
};
pub use bind::Params;
pub use compare::{compare, json_eq, value_total_cmp};
pub use error::{Position, QueryError};
pub use eval::{eval, matches, truth};
pub use name::{MAX_NAME_LEN, validate_collection_name};
pub use parser::{MAX_NESTING, parse, parse_expression, parse_script};
pub use predicate::{IndexPredicate, RangeOp, conjuncts, index_predicate};
pub use select::{compare_documents, sort_documents};
pub use value::{Datum, Truth};
