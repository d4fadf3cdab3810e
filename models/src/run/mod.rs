pub mod json_constraint;
